"""One engine per model spec on a node: every worker's requests in one continuous batch.

Started by the first worker that needs it (:mod:`hpc_chat.worker.engine_client`) as
``python -m hpc_chat.worker.node_engine``, it loads the model once, opens a batched context of
``--slots`` sequences and decodes from one :class:`~hpc_chat.llm.feed.Feed` for its whole
life, so a slot freed by a finished answer takes the next waiting request at the next step,
whichever worker and whichever Parsl task sent it. Requests to different agents on the same
model share it (each agent's system prompt has its own shared-prefix holder).

One connection per worker task (:mod:`hpc_chat.protocol.engine`): its reader thread fits each
request to the context and puts it in the feed; its writer thread sends each answer's text as it
grows, when asked, and its completion or error. A ``cancel`` order stops one request; a client
that closes its connection (a killed worker, a task that failed or timed out) cancels every
request it still holds, which frees their slots at the next step.

Lifetimes: the engine is in its worker's process group and its pilot job, so it ends with the
block; it also ends within a second of the worker pool's manager (``--manager``), which ends
when the driver does. A decode failure fails every request it holds and ends the engine, and
the next request starts a fresh one.
"""

from __future__ import annotations

import argparse
import fcntl
import logging
import os
import queue
import signal
import socket
import struct
import sys
import threading
import time
from multiprocessing.connection import Connection, Listener
from pathlib import Path

from hpc_chat.errors import FormatError, PromptTooLongError
from hpc_chat.llm.feed import Feed, Job
from hpc_chat.llm.models import ModelSpec
from hpc_chat.llm.registry import get_batched_engine, get_embedder, get_engine
from hpc_chat.protocol import engine as wire
from hpc_chat.protocol.request import Completion
from hpc_chat.util.sockets import shut_both_ways
from hpc_chat.worker.fitting import fit

log = logging.getLogger("hpc_chat.node_engine")
WATCH_S = 1.0  # how often the manager is checked
WAKE_S = 0.2  # how long the connections get to send their errors when the loop fails
BACKLOG = 128  # every worker of a node may connect at once
CLOSE_S = 5.0  # how long a closing connection's writer may take to send what is queued


def process_start(pid: int) -> int | None:
    """A process's start time (``/proc/PID/stat`` field 22), None when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return None if fields[0] == "Z" else int(fields[19])


class _Link:
    """One worker's connection: the requests it holds here, and the thread that writes their
    events. The decode loop only queues what it has to say (an outcome; for a streamed
    answer, that its text grew); the writer sends it, so a worker slow to read never stalls
    the loop, and a task's requests cost two threads, not one each."""

    def __init__(self, conn: Connection):
        self.conn, self.client = conn, _peer_pid(conn)
        self.jobs: dict[int, Job] = {}  # rid -> its job, until its outcome is queued
        self.lock = threading.Lock()
        self.out: queue.SimpleQueue = queue.SimpleQueue()
        self.latest: dict[int, str] = {}  # rid -> its text, while a "grew" is queued
        self.sent: dict[int, str] = {}  # rid -> the streamed text sent so far
        self.closed = False  # the worker went away: what ends now is heard by nobody
        self.writer = threading.Thread(target=self._write_all, daemon=True)
        self.writer.start()

    def send(self, message) -> None:
        self.out.put(message)

    def grew(self, rid: int, text: str) -> bool:
        """A streamed answer's text so far: only the latest waits for the writer (a worker
        slow to read holds one text per answer, not one per token)."""
        with self.lock:
            queued = rid in self.latest
            self.latest[rid] = text
        if not queued:
            self.out.put(rid)
        return True

    def cancel(self, rid: int) -> None:
        with self.lock:
            job = self.jobs.get(rid)
        if job is not None:
            job.cancelled.set()

    def close(self) -> None:
        """The worker went away (or the connection failed): every answer it still holds
        stops at the next step. The writer sends what was queued (an error for an order it
        could not read) within :data:`CLOSE_S`; a worker that reads nothing then is cut off."""
        with self.lock:
            self.closed, jobs = True, list(self.jobs.values())
        for job in jobs:
            job.cancelled.set()
        self.out.put(None)
        self.writer.join(CLOSE_S)
        if self.writer.is_alive():
            shut_both_ways(self.conn)
            self.writer.join()

    def _write_all(self) -> None:
        broken = False
        while (item := self.out.get()) is not None:
            if broken:
                continue  # nobody reads: drop what is left
            if isinstance(item, int):  # a streamed answer grew: what is new only
                with self.lock:
                    text = self.latest.pop(item, "")
                sent = self.sent.get(item, "")
                if len(text) <= len(sent) or not text.startswith(sent):
                    continue
                self.sent[item] = text
                item = wire.Text(rid=item, t=text[len(sent):])
            try:
                self.conn.send_bytes(wire.encode(item))
            except (OSError, ValueError) as exc:
                # The worker is gone, or an event could not be written: end the connection,
                # so its reader (and the worker, which sees it end) stop waiting for answers.
                if not isinstance(exc, (BrokenPipeError, ConnectionResetError)):
                    log.error("cannot send to a worker (%s): closing its connection",
                              type(exc).__name__)
                broken = True
                shut_both_ways(self.conn)


class NodeEngine:
    def __init__(self, spec: ModelSpec, slots: int, cache_mb: int | None = None):
        self.spec, self.slots = spec, slots
        self.engine, _ = get_engine(spec)
        self.batched = get_batched_engine(self.engine, slots, cache_mb)
        self.feed = Feed()
        self.lock = threading.Lock()
        self.clients: dict[int, int] = {}  # worker pid -> its requests in flight here
        self.served = 0
        self.load_pending = True  # the first answer reports the model load
        self.info = wire.EngineInfo(pid=os.getpid(), host=socket.gethostname(), slots=slots)

    def status(self) -> wire.EngineStatus:
        waiting = self.feed.waiting()  # its lock before ours, never inside: _ended takes both
        with self.lock:
            return wire.EngineStatus(**self.info.model_dump(), model=self.spec.path,
                                in_flight=sum(self.clients.values()),
                                clients={str(pid): n for pid, n in self.clients.items()},
                                waiting=waiting, served=self.served,
                                load_s=self.engine.load_s,
                                holders=self.batched.n_holders,
                                **(self.batched.profile.counters()
                                   if hasattr(self.batched, "profile") else {}))

    def run(self) -> None:
        self.batched.run(self.feed)

    def handle(self, conn: Connection) -> None:
        """Read a worker's orders until it closes the connection (its task ended): each decode
        joins the feed, its events go back through the link's writer."""
        link = _Link(conn)
        try:
            while True:
                raw = conn.recv_bytes()
                try:
                    order = wire.read_order(raw)
                    if order.op is wire.Op.DECODE and order.request is None:
                        raise ValueError("a decode order without a request")
                    if order.op is wire.Op.EMBED and order.embed is None:
                        raise ValueError("an embed order without inputs")
                except ValueError as exc:  # its first line only: no prompt text
                    first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                    link.send(wire.Failed(error="not a request the engine can decode: "
                                          f"{first}", kind=wire.FailKind.INPUT))
                    return  # which request it was is unknown: the connection ends
                if order.op is wire.Op.STATUS:
                    link.send(self.status())
                elif order.op is wire.Op.DECODE:
                    self._decode(link, order)
                elif order.op is wire.Op.CANCEL:
                    link.cancel(order.rid)
                elif order.op is wire.Op.EMBED:
                    link.send(self._embed(order.embed).model_copy(update={"rid": order.rid}))
        except (EOFError, OSError) as exc:  # its type only: no prompt text
            if not isinstance(exc, EOFError):
                log.info("connection dropped (%s)", type(exc).__name__)
        finally:
            link.close()
            conn.close()

    def _decode(self, link: _Link, order: wire.Order) -> None:
        rid = order.rid
        try:
            decoded = fit(self.engine.count_tokens, self.spec.n_ctx, order.request, order.exact)
        except PromptTooLongError as exc:
            return link.send(wire.Failed(rid=rid, error=str(exc), kind=wire.FailKind.TOO_LONG))
        except ValueError as exc:  # a request fit cannot measure: this one fails alone
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            return link.send(wire.Failed(rid=rid, error=f"not a request the engine can decode: "
                                         f"{first}", kind=wire.FailKind.INPUT))
        if order.stream:  # what the engine stops on besides the request's own stop strings
            link.send(wire.Stops(rid=rid, stops=self.batched.template_stops if
                                 decoded.prompt is None else []))  # a text completion
        job = Job(decoded, lambda outcome: self._ended(link, rid, decoded, outcome),
                  (lambda text: link.grew(rid, text)) if order.stream else None)
        with link.lock:
            link.jobs[rid] = job
        with self.lock:
            self.clients[link.client] = self.clients.get(link.client, 0) + 1
        try:
            self.feed.put(job)
        except RuntimeError:  # the decode loop has stopped: this engine is ending
            self._ended(link, rid, decoded, RuntimeError(f"node engine {self.info.pid} has "
                                                         "stopped"))

    def _ended(self, link: _Link, rid: int, decoded, outcome) -> None:
        """A request's outcome (on the decode loop's thread): counted, and queued to its
        worker as ``done`` or ``failed``."""
        with link.lock:
            link.jobs.pop(rid, None)
            heard = not link.closed
        waiting = self.feed.waiting()
        with self.lock:
            load = wire.EngineLoad(running=max(min(self.slots, sum(self.clients.values())
                                                   - waiting), 1), waiting=waiting,
                                   cap=self.batched.cap)
            self.clients[link.client] -= 1
            if not self.clients[link.client]:
                del self.clients[link.client]
            if isinstance(outcome, Completion) and heard:
                self.served += 1
                outcome.model_loaded_now, self.load_pending = self.load_pending, False
        if isinstance(outcome, Completion):
            link.send(wire.Done(rid=rid, completion=outcome, request=decoded,
                                n_threads=self.engine.n_threads, engine=self.info, load=load))
        elif isinstance(outcome, FormatError):  # refused before decoding: this request only
            link.send(wire.Failed(rid=rid, error=str(outcome), kind=wire.FailKind.FORMAT,
                                  param=outcome.param))
        else:  # too long for the context, or the decode loop failed (the engine ends)
            kind = wire.FailKind.TOO_LONG if isinstance(outcome, PromptTooLongError) \
                else wire.FailKind.LOST
            link.send(wire.Failed(rid=rid, error=f"node engine {self.info.pid}: {outcome}",
                                  kind=kind))

    def _embed(self, request) -> wire.Embedded | wire.Failed:
        """Embed on this connection's thread, in the embedding context (its own lock), beside
        the decode loop: answers keep being decoded meanwhile."""
        try:
            embedder = get_embedder(self.engine, request.pooling)
            out = embedder.embed(request.inputs)
        except PromptTooLongError as exc:
            return wire.Failed(error=str(exc), kind=wire.FailKind.TOO_LONG)
        except ValueError as exc:  # an input that is not one (an unknown token id)
            return wire.Failed(error=str(exc), kind=wire.FailKind.INPUT)
        except Exception as exc:  # noqa: BLE001 - a failed context: the task is retried
            return wire.Failed(error=f"node engine {self.info.pid}: {type(exc).__name__}: "
                                     f"{exc}", kind=wire.FailKind.LOST)
        with self.lock:
            self.served += 1
        return wire.Embedded(embeddings=out, engine=self.info)


def _serve(listener: Listener, node: NodeEngine) -> None:
    """Accept connections; when accepting fails (no file descriptors left), end the engine
    rather than keep a socket that answers nobody (the main thread sees this thread end)."""
    while True:
        try:
            conn = listener.accept()
        except OSError as exc:
            log.error("cannot accept connections any more (%s): stopping", exc)
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
    parser.add_argument("--prefix-cache-mb", type=int, default=None)
    parser.add_argument("--manager", type=int, required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s node-engine %(message)s")
    path = Path(args.socket)
    manager_start = process_start(args.manager) if args.manager > 1 else None
    if manager_start is None:
        log.error("the worker pool's manager (pid %d) is not running: not starting",
                  args.manager)
        return 1
    alive = open(path.with_suffix(".alive"), "a")  # noqa: SIM115 - held for the engine's life
    try:  # one engine per socket, even while loading (engine_client.engine_alive)
        fcntl.lockf(alive, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        log.error("another engine for %s is running: not starting", path)
        return 1
    signal.signal(signal.SIGTERM, lambda *_: _end(path, 0))
    _adopt_affinity(args.manager)
    spec = ModelSpec.model_validate_json(args.spec)
    node = NodeEngine(spec, args.slots, args.prefix_cache_mb)
    log.info("pid %d: %s loaded in %.1f s, %d slots, %d prompt-cache holders, %d threads; "
             "serving %s", os.getpid(), spec.path, node.engine.load_s, args.slots,
             node.batched.n_holders, node.engine.n_threads, path)
    decoder = threading.Thread(target=node.run, daemon=True)
    decoder.start()
    binding = path.with_suffix(".new")
    binding.unlink(missing_ok=True)  # left by an engine that died right here
    listener = Listener(str(binding), family="AF_UNIX", backlog=BACKLOG)
    os.replace(binding, path)  # appears only when ready to answer
    bound = path.stat().st_ino
    acceptor = threading.Thread(target=_serve, args=(listener, node), daemon=True)
    acceptor.start()
    code = 0
    while True:
        time.sleep(WATCH_S)
        if process_start(args.manager) != manager_start:
            log.info("the worker pool's manager (pid %d) has ended: stopping", args.manager)
            break
        if not _still_bound(path, bound):
            # Nobody can reach this engine any more (a cleaner of /tmp, a user's rm): end,
            # so the next worker starts a fresh one instead of waiting for this one for ever.
            log.error("its socket %s was removed or replaced: stopping", path)
            code = 4
            break
        if not decoder.is_alive() or not acceptor.is_alive():
            log.error("the %s stopped: stopping (the requests it held were failed)",
                      "decode loop" if not decoder.is_alive() else "listener")
            code = 3
            time.sleep(WAKE_S * 2)  # let the connections send their errors
            break
    _end(path, code, keep_socket=code == 4)  # a socket there now is not this engine's


def _peer_pid(conn: Connection) -> int:
    """The PID of the process at the other end of a Unix-socket connection (the kernel's
    SO_PEERCRED): which worker a request came from, in the status."""
    try:
        with socket.socket(fileno=os.dup(conn.fileno())) as sock:
            creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                    struct.calcsize("3i"))
        return struct.unpack("3i", creds)[0]
    except OSError:
        return 0


def _still_bound(path: Path, inode: int) -> bool:
    try:
        return path.stat().st_ino == inode
    except OSError:
        return False


def _end(path: Path, code: int, *, keep_socket: bool = False) -> None:
    """Remove the socket; a clean end leaves nothing else, a failure keeps its log (quoted by
    the next start's error, if that fails too)."""
    if not keep_socket:
        path.unlink(missing_ok=True)
    if code == 0:
        for suffix in (".log", ".lock", ".alive"):
            path.with_suffix(suffix).unlink(missing_ok=True)
    os._exit(code)


if __name__ == "__main__":
    sys.exit(main())
