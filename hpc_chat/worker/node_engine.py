"""One engine per model spec on a node: every worker's requests in one continuous batch.

Started by the first worker that needs it (:mod:`hpc_chat.worker.engine_client`) as
``python -m hpc_chat.worker.node_engine``, it loads the model once, opens a batched context of
``--slots`` sequences and decodes from one :class:`~hpc_chat.llm.feed.Feed` for its whole
life, so a slot freed by a finished answer takes the next waiting request at the next step,
whichever worker and whichever Parsl task sent it. Requests to different agents on the same
model share it (each agent's system prompt has its own shared-prefix holder).

One thread per connection: it reads one request, fits it to the context, puts it in the feed,
streams its text back when asked, and sends the completion, or the error. A client that closes
its connection (a killed worker) cancels its request, which frees its slot at the next step.

Lifetimes: the engine is in its worker's process group and its pilot job, so it ends with the
block; it also ends within a second of the worker pool's manager (``--manager``), which ends
when the driver does. A decode failure fails every request it holds and ends the engine, and
the next request starts a fresh one.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import socket
import sys
import threading
import time
from dataclasses import asdict
from multiprocessing.connection import Connection, Listener
from pathlib import Path

from pydantic import ValidationError

from hpc_chat.errors import PromptTooLongError
from hpc_chat.llm.engine import Completion
from hpc_chat.llm.feed import Feed, Job
from hpc_chat.llm.models import ModelSpec
from hpc_chat.llm.registry import get_batched_engine, get_engine
from hpc_chat.llm.request import GenRequest
from hpc_chat.worker.chat import fit

log = logging.getLogger("hpc_chat.node_engine")
WATCH_S = 1.0  # how often the manager is checked
WAKE_S = 0.2  # how often a waiting connection looks for a closed client


def process_start(pid: int) -> int | None:
    """A process's start time (``/proc/PID/stat`` field 22), None when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return None if fields[0] == "Z" else int(fields[19])


class _Answer:
    """What the decode loop tells one connection: the text so far, then the outcome."""

    def __init__(self):
        self.event = threading.Event()
        self.text = ""
        self.outcome = None

    def grew(self, text: str) -> bool:
        self.text = text
        self.event.set()
        return True

    def finish(self, outcome) -> None:
        self.outcome = outcome
        self.event.set()


class NodeEngine:
    def __init__(self, spec: ModelSpec, slots: int):
        self.spec, self.slots = spec, slots
        self.engine, _ = get_engine(spec)
        self.batched = get_batched_engine(self.engine, slots)
        self.feed = Feed()
        self.lock = threading.Lock()
        self.in_flight = 0
        self.served = 0
        self.load_pending = True  # the first answer reports the model load
        self.info = {"pid": os.getpid(), "host": socket.gethostname(), "slots": slots}

    def status(self) -> dict:
        with self.lock:
            return {**self.info, "model": self.spec.path, "in_flight": self.in_flight,
                    "waiting": self.feed.waiting(), "served": self.served,
                    "load_s": self.engine.load_s}

    def run(self) -> None:
        self.batched.run(self.feed)

    def handle(self, conn: Connection) -> None:
        with conn:
            try:
                msg = json.loads(conn.recv_bytes())
                if msg.get("op") == "status":
                    conn.send_bytes(json.dumps(self.status()).encode())
                elif msg.get("op") == "decode":
                    self._decode(conn, msg)
            except (EOFError, OSError, ValueError, TypeError, AttributeError) as exc:
                log.info("connection dropped: %s", exc)

    def _decode(self, conn: Connection, msg: dict) -> None:
        try:
            req = GenRequest.model_validate(msg.get("request"))
            decoded = fit(self.engine.count_tokens, self.spec.n_ctx, req, bool(msg.get("exact")))
        except PromptTooLongError as exc:
            return conn.send_bytes(json.dumps({"error": str(exc), "kind": "too_long"}).encode())
        except ValidationError as exc:
            return conn.send_bytes(json.dumps({"error": f"not a request: {exc}",
                                               "kind": "input"}).encode())
        stream = bool(msg.get("stream"))
        if stream:
            stops = getattr(self.batched, "template_stops", [])  # the echo model has none
            conn.send_bytes(json.dumps({"stops": stops}).encode())
        answer = _Answer()
        job = Job(decoded, answer.finish, answer.grew if stream else None)
        with self.lock:
            self.in_flight += 1
        try:
            self.feed.put(job)
            self._follow(conn, job, answer, stream)
        except (EOFError, OSError):
            job.cancelled.set()  # the worker went away: its slot is freed at the next step
            while answer.outcome is None:
                answer.event.wait(WAKE_S)
            raise
        finally:
            with self.lock:
                self.in_flight -= 1
        outcome = answer.outcome
        if isinstance(outcome, Completion):
            with self.lock:
                self.served += 1
                outcome.model_loaded_now, self.load_pending = self.load_pending, False
            conn.send_bytes(json.dumps({"done": asdict(outcome), "request": decoded.model_dump(),
                                        "n_threads": self.engine.n_threads,
                                        "engine": self.info}).encode())
        else:
            kind = "too_long" if isinstance(outcome, PromptTooLongError) else "runtime"
            conn.send_bytes(json.dumps({"error": f"node engine {self.info['pid']}: {outcome}",
                                        "kind": kind}).encode())

    @staticmethod
    def _follow(conn: Connection, job: Job, answer: _Answer, stream: bool) -> None:
        """Send the text as it grows until the outcome is there; a message from the client
        (``cancel``) or its end cancels the request."""
        sent = ""
        while answer.outcome is None:
            answer.event.wait(WAKE_S)
            answer.event.clear()
            if stream and answer.outcome is None and answer.text != sent:
                sent = answer.text
                conn.send_bytes(json.dumps({"text": sent}).encode())
            if conn.poll(0):
                conn.recv_bytes()  # EOFError when the client is gone
                job.cancelled.set()


def _serve(listener: Listener, node: NodeEngine) -> None:
    while True:
        try:
            conn = listener.accept()
        except OSError:
            return
        threading.Thread(target=node.handle, args=(conn,), daemon=True).start()


def _adopt_affinity(manager: int) -> None:
    """Run on the cores of the whole worker pool, not of the worker that started us."""
    try:
        os.sched_setaffinity(0, os.sched_getaffinity(manager))
    except (AttributeError, OSError):
        pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hpc_chat.worker.node_engine")
    parser.add_argument("--socket", required=True)
    parser.add_argument("--spec", required=True)
    parser.add_argument("--slots", type=int, required=True)
    parser.add_argument("--manager", type=int, required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s node-engine %(message)s")
    path = Path(args.socket)
    manager_start = process_start(args.manager)
    signal.signal(signal.SIGTERM, lambda *_: _end(path, 0))
    _adopt_affinity(args.manager)
    spec = ModelSpec.model_validate_json(args.spec)
    node = NodeEngine(spec, args.slots)
    log.info("pid %d: %s loaded in %.1f s, %d slots, %d threads; serving %s", os.getpid(),
             spec.path, node.engine.load_s, args.slots, node.engine.n_threads, path)
    decoder = threading.Thread(target=node.run, daemon=True)
    decoder.start()
    listener = Listener(str(path.with_suffix(".new")), family="AF_UNIX")
    os.replace(path.with_suffix(".new"), path)  # appears only when ready to answer
    threading.Thread(target=_serve, args=(listener, node), daemon=True).start()
    code = 0
    while True:
        time.sleep(WATCH_S)
        if process_start(args.manager) != manager_start:
            log.info("the worker pool's manager (pid %d) has ended: stopping", args.manager)
            break
        if not decoder.is_alive():
            log.error("the decode loop failed: stopping (its requests were failed)")
            code = 3
            time.sleep(WAKE_S * 2)  # let the connections send their errors
            break
    _end(path, code)


def _end(path: Path, code: int) -> None:
    """Remove the socket; a clean end leaves nothing else, a failure keeps its log (quoted by
    the next start's error, if that fails too)."""
    path.unlink(missing_ok=True)
    if code == 0:
        for leftover in (path.with_suffix(".log"), path.with_suffix(".lock")):
            leftover.unlink(missing_ok=True)
    os._exit(code)


if __name__ == "__main__":
    sys.exit(main())
