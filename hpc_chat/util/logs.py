"""Logging that respects one global switch.

``set_debug_mode(True)`` turns on debug output for hpc_chat and Parsl and lets llama.cpp's native
log through (engines created afterwards pass ``verbose=True``); ``False`` keeps both quiet so the
CLI prints only answers, progress and errors.
"""

from __future__ import annotations

import logging
import os

_HANDLER_NAME = "hpc_chat-console"


def set_debug_mode(enabled: bool) -> None:
    """Switch debug logging on or off for hpc_chat, Parsl, and (via the environment) workers."""
    level = logging.DEBUG if enabled else logging.WARNING
    logger = logging.getLogger("hpc_chat")
    logger.setLevel(level)
    if not any(h.get_name() == _HANDLER_NAME for h in logger.handlers):
        handler = logging.StreamHandler()
        handler.set_name(_HANDLER_NAME)
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
        logger.addHandler(handler)
    logging.getLogger("parsl").setLevel(logging.DEBUG if enabled else logging.WARNING)
    # Worker processes inherit the environment; the engine reads this to choose verbose=True.
    if enabled:
        os.environ["HPC_CHAT_DEBUG"] = "1"
    else:
        os.environ.pop("HPC_CHAT_DEBUG", None)


# The states every task passes through; a state change to any other (failed, dep_fail,
# fail_retryable...) stays in parsl.log.
ROUTINE_STATES = frozenset({"unsched", "pending", "launched", "running", "running_ended",
                            "exec_done"})
_ROUTINE_TEXT = (" submitted for App ", " will not be redirected.")


class RoutineTaskLines(logging.Filter):
    """Drops the INFO lines Parsl's DataFlowKernel writes for every task that goes as planned:
    submitted, each ordinary state change, where its output goes (eight of its nine a task).
    At corpus scale they were 430 MB of ``parsl.log`` per million batch lines and a fifth of
    the driver's time. Each task's launch line stays (its try and executor id, which the
    worker pool's logs name), as do warnings, errors, a task's failure and retries, and every
    line of the start and the shutdown; ``hpc-chat --debug`` keeps them all."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno != logging.INFO:
            return True
        state = getattr(record, "parsl.task_state", None)
        if state is not None:
            return state not in ROUTINE_STATES
        text = record.msg if isinstance(record.msg, str) else ""
        return not any(part in text for part in _ROUTINE_TEXT)


def quiet_routine_task_lines(enabled: bool) -> None:
    """Install (or, with ``enabled`` False, remove) :class:`RoutineTaskLines` on Parsl's
    DataFlowKernel logger, once."""
    logger = logging.getLogger("parsl.dataflow.dflow")
    for old in [f for f in logger.filters if isinstance(f, RoutineTaskLines)]:
        logger.removeFilter(old)
    if enabled:
        logger.addFilter(RoutineTaskLines())
