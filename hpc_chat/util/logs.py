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
