"""A worker's side of its node's engine: find it or start it, send it requests, read answers.

In a Parsl worker, requests do not decode in the worker's own process: they go over a Unix
socket to one engine per model spec on the node (:mod:`hpc_chat.worker.node_engine`), which
decodes every worker's requests in one continuous batch. The socket lives in a directory only
this user can open (``$TMPDIR/hpc_chat-UID``, or ``/tmp`` when that path is too long for a Unix
socket; another user's directory of that name is passed over: :mod:`hpc_chat.util.rundir`) and
is named after the host and the worker pool's manager (so each pilot job's pool has its own
engine, which ends with it) and a hash of the model spec, the slots, the prompt-cache bound and
the GPUs the worker may use (so each GPU of a node gets its own engine).

The worker pool's start (:mod:`hpc_chat.worker.pool_start`), or else the first worker that
needs an engine, starts it, holding a lock file so that only one does; the others wait on the
lock and then connect. An engine that ends while it holds a request raises
:class:`EngineLost` here: the whole task fails, Parsl retries it, the retry starts a fresh one.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing.connection import Client, Connection
from pathlib import Path

from hpc_chat.errors import FormatError, PromptTooLongError
from hpc_chat.llm.models import ModelSpec
from hpc_chat.protocol import engine as wire
from hpc_chat.protocol.context import SiteModel
from hpc_chat.protocol.embedding import Embeddings, EmbedRequest
from hpc_chat.protocol.request import Completion, GenRequest
from hpc_chat.util.rundir import runtime_dir
from hpc_chat.util.sockets import shut_both_ways
from hpc_chat.worker import time_limit
from hpc_chat.worker.stream import TokenSender, streams_tokens

GPU_VARIABLES = ("CUDA_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES", "ZE_AFFINITY_MASK",
                 "HIP_VISIBLE_DEVICES")
START_POLL_S = 0.05
WAIT_S = 0.2  # how often a task waiting for its answers looks at its time limit
INLINE_BYTES = 64 * 1024  # a task's orders this small never fill a fresh socket's buffer
ENGINE_SPINCOUNT = 1000  # OpenMP's spins at a barrier before its threads sleep: see start()
ENGINE_FILES = (".sock", ".lock", ".alive", ".log")


@dataclass
class Decoded:
    """One request's completion, the request as decoded (its messages fitted to the context),
    and the engine that decoded it."""

    completion: Completion
    request: GenRequest
    n_threads: int
    engine: dict | None = None  # the node engine's pid, host and slots; None: this process
    load: dict | None = None  # how busy it was as the answer ended (not provenance)


class EngineLost(RuntimeError):
    """The node engine ended (killed, out of memory) while it held this request: retryable."""


def settings(site_model: SiteModel) -> dict:
    """The engine settings of the site's ``model`` section (``engine``: node or worker)."""
    return {"mode": site_model.engine, "slots": site_model.engine_slots,
            "prefix_cache_mb": site_model.prefix_cache_mb}


def _shape(engine: dict) -> tuple[int, int]:
    """An engine's slots and prompt-cache bound (MiB), the sites' defaults when not given."""
    fields, cache = SiteModel.model_fields, engine.get("prefix_cache_mb")
    return (int(engine.get("slots") or fields["engine_slots"].default),
            fields["prefix_cache_mb"].default if cache is None else int(cache))


def wanted(engine: dict) -> bool:
    """The node engine is used inside a Parsl worker (which has a pool manager to outlive the
    task and bound the engine's life) unless the site asks for in-worker decoding."""
    return engine.get("mode", "node") == "node" and "PARSL_WORKER_RANK" in os.environ and \
        os.getppid() != 1  # an orphaned worker has no manager to bound an engine's life


def engine_path(spec: ModelSpec, engine: dict, manager: int | None = None) -> Path:
    """The engine's socket for ``spec`` and the ``engine`` settings (:func:`settings`) under
    the pool manager ``manager`` (this worker's parent unless given:
    :mod:`hpc_chat.worker.pool_start` runs beside the manager)."""
    gpus = {name: os.environ.get(name) for name in GPU_VARIABLES}
    key = hashlib.sha256(json.dumps([spec.model_dump(), *_shape(engine), gpus],
                                    sort_keys=True).encode()).hexdigest()[:12]
    return runtime_dir() / f"engine-{_host()}-{manager or os.getppid()}-{key}.sock"


def _host() -> str:
    """This host's name in file names: a $TMPDIR shared between nodes keeps them apart."""
    return socket.gethostname().split(".")[0][:24] or "host"


_threads = threading.Lock()  # lockf excludes other processes only, not this one's threads


@contextmanager
def _locked(path: Path, limit: time_limit.Limit = None):
    """The start lock, waited for (while another worker loads the model) within ``limit``."""
    while not _threads.acquire(timeout=START_POLL_S):
        time_limit.check(limit)
    try:
        with open(path, "a") as handle:
            while True:
                try:
                    fcntl.lockf(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except OSError:  # held by another process
                    time_limit.check(limit)
                    time.sleep(START_POLL_S)
            try:
                yield
            finally:
                fcntl.lockf(handle, fcntl.LOCK_UN)
    finally:
        _threads.release()


def _try_connect(path: Path) -> Connection | None:
    try:
        return Client(str(path), family="AF_UNIX")
    except (FileNotFoundError, ConnectionRefusedError):
        return None


def connect(spec: ModelSpec, engine: dict, limit: time_limit.Limit = None, *,
            manager: int | None = None) -> Connection:
    """A connection to this node's engine for ``spec``, starting the engine when needed (and
    waiting for its model to load at most until the task's ``limit``)."""
    path = engine_path(spec, engine, manager)
    conn = _try_connect(path)
    if conn is not None:
        return conn
    with _locked(path.with_suffix(".lock"), limit):
        conn = _try_connect(path)  # another worker started it while we waited
        if conn is None:
            start(path, spec, engine, limit=limit, manager=manager)
            conn = _try_connect(path)
        if conn is None:
            raise EngineLost(f"the node engine at {path} ended as soon as it started")
        return conn


def remove_dead(directory: Path) -> None:
    """The files of engines whose worker pool is gone (a killed job leaves them behind)."""
    for sock in directory.glob(f"engine-{_host()}-*.sock"):
        try:
            manager = int(sock.name.rsplit("-", 2)[1])
        except (IndexError, ValueError):
            continue
        if not Path(f"/proc/{manager}").exists():
            for suffix in ENGINE_FILES:
                sock.with_suffix(suffix).unlink(missing_ok=True)


def engine_alive(path: Path) -> bool:
    """Whether an engine for ``path`` runs (loading or serving): it holds a lock on its
    ``.alive`` file for its whole life, taken before it loads the model."""
    with open(path.with_suffix(".alive"), "a") as handle:
        try:
            fcntl.lockf(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return True
        fcntl.lockf(handle, fcntl.LOCK_UN)
        return False


def start(path: Path, spec: ModelSpec, engine: dict, *, again: bool = True,
          limit: time_limit.Limit = None, manager: int | None = None) -> None:
    """Start an engine and wait until it listens (its model loaded), or say why it ended. When
    one is already loading (the worker that started it died, or its task timed out), wait for
    that one instead: never two models in memory for one spec. One that ends while waited for
    (a load that failed, or an engine whose socket was removed: it stops itself) is replaced
    once by a fresh one."""
    proc = None
    slots, cache_mb = _shape(engine)
    if not engine_alive(path):
        path.unlink(missing_ok=True)  # a dead engine's socket
        remove_dead(path.parent)
        env = {k: v for k, v in os.environ.items() if k != "PARSL_WORKER_COUNT"}  # all cores
        # How long llama.cpp's OpenMP threads spin at each barrier before they sleep. Alone
        # on its cores an engine needs them to spin (sleeping threads: 131 instead of 200
        # tokens/s on 2 cores); with the default 300,000 spins two engines on the same cores
        # crawl (24 prompts each: 9.5 min instead of 34 s). 1,000 spins keep the full speed
        # alone and about two thirds of the sleeping threads' speed when two engines share
        # the cores (docs/troubleshooting.md). The user's own OpenMP settings win.
        if "OMP_WAIT_POLICY" not in env:
            env.setdefault("GOMP_SPINCOUNT", str(ENGINE_SPINCOUNT))
        with open(path.with_suffix(".log"), "ab") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "hpc_chat.worker.node_engine", "--socket", str(path),
                 "--spec", spec.model_dump_json(), "--slots", str(slots),
                 "--prefix-cache-mb", str(cache_mb),
                 "--manager", str(manager or os.getppid())],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
                close_fds=True)
    while not path.exists():  # the model load: as long as it takes, within the task's limit
        time_limit.check(limit)
        if proc is not None and proc.poll() is not None:
            log_path = path.with_suffix(".log")
            tail = log_path.read_text(errors="replace").strip().splitlines()[-5:]
            raise EngineLost(f"the node engine for {spec.path} exited with code "
                             f"{proc.returncode} while starting ({log_path}): "
                             + " | ".join(tail))
        if proc is None and not engine_alive(path):
            if again:
                return start(path, spec, engine, again=False, limit=limit, manager=manager)
            raise EngineLost(f"the node engine for {spec.path} ended while loading "
                             f"({path.with_suffix('.log')})")
        time.sleep(START_POLL_S)


def _exception(failed: wire.Failed) -> Exception:
    if failed.kind is wire.FailKind.LOST:
        raise EngineLost(failed.error)  # the engine failed, not the request: retry the task
    if failed.kind is wire.FailKind.TOO_LONG:
        return PromptTooLongError(failed.error)
    if failed.kind is wire.FailKind.FORMAT:
        return FormatError(failed.error, param=failed.param or "response_format")
    return ValueError(failed.error)


class _Answer:
    """One request of a task as its events arrive: its text so far and its stream, if any."""

    def __init__(self, prep):
        self.prep, self.text, self.sender = prep, "", None
        self.tokens = streams_tokens(prep.stream)

    def end_stream(self) -> None:
        if self.sender is not None:
            self.sender.finish(None)


def decode(spec: ModelSpec, engine: dict, preps: list, finish: Callable) -> list:
    """Each request's result, ``finish(prep, Decoded)``, or its own exception, decoded by the
    node's engine; a lost engine fails them all (:class:`EngineLost`, retried by Parsl). A
    request with a stream sends its result on it as soon as it is done.

    The task's requests go over one connection (:mod:`hpc_chat.protocol.engine`), all sent at
    once, and their events are read here as the engine ends each answer. The whole task fails
    with :class:`~hpc_chat.errors.TaskTimeout` when an answer has not been received by the
    task's time limit (:mod:`hpc_chat.worker.time_limit`): checked every :data:`WAIT_S` and
    when each answer arrives. Then, or on any other failure, the connection is closed and the
    engine stops every answer of the task at its next step."""
    limit = time_limit.deadline()
    answers = [_Answer(prep) for prep in preps]
    results: list = [None] * len(preps)
    pending = len(preps)
    orders = [wire.encode(wire.Order(op=wire.Op.DECODE, rid=rid, request=answer.prep.request,
                                     exact=answer.prep.exact, stream=answer.tokens))
              for rid, answer in enumerate(answers)]
    try:
        with connect(spec, engine, limit) as conn:
            channel = _Channel(conn, orders)
            try:
                while pending:
                    time_limit.check(limit)
                    left = time_limit.left(limit)
                    if not conn.poll(WAIT_S if left is None else min(WAIT_S, max(left, 0.0))):
                        continue
                    event = wire.read_event(conn.recv_bytes())
                    if not 0 <= event.rid < len(answers) or results[event.rid] is not None:
                        raise EngineLost(f"the node engine for {spec.path} answered request "
                                         f"{event.rid}, which it does not hold")
                    outcome = _event(channel, answers[event.rid], event, finish, limit)
                    if outcome is not None:
                        results[event.rid], pending = outcome, pending - 1
            finally:
                channel.end()  # before the connection closes: a send blocked on it ends
    except (EOFError, OSError) as exc:
        _end_streams(answers, results)
        raise EngineLost(f"the node engine for {spec.path} ended while it held this task's "
                         f"requests ({type(exc).__name__}: {exc}); they are retried on a new "
                         f"engine") from None
    except BaseException:
        _end_streams(answers, results)
        raise
    return [r[0] for r in results]


class _Channel:
    """A task's connection to its engine, for sending. Orders that fit a fresh Unix socket's
    buffer (:data:`INLINE_BYTES`) are sent at once; more go out from a thread of their own,
    so that an engine that stops reading (stopped, swapping) cannot hold the task past its
    time limit: :meth:`end` cuts the connection under a send still blocked."""

    def __init__(self, conn: Connection, orders: list[bytes]):
        self.conn, self.lock, self.thread = conn, threading.Lock(), None
        if sum(len(raw) for raw in orders) <= INLINE_BYTES:
            for raw in orders:
                conn.send_bytes(raw)
            return
        self.thread = threading.Thread(target=self._send_all, args=(orders,), daemon=True,
                                       name="hpc_chat-orders")
        self.thread.start()

    def _send_all(self, orders: list[bytes]) -> None:
        try:
            for raw in orders:
                with self.lock:
                    self.conn.send_bytes(raw)
        except (OSError, ValueError):
            pass  # the connection ended: the reading thread sees it too

    def cancel(self, rid: int) -> None:
        """Stop one answer (its stream's client went away). Skipped while the orders are
        still being sent: that answer then runs to its end, unheard."""
        if self.lock.acquire(timeout=WAIT_S):
            try:
                self.conn.send_bytes(wire.encode(wire.Order(op=wire.Op.CANCEL, rid=rid)))
            finally:
                self.lock.release()

    def end(self) -> None:
        if self.thread is not None and self.thread.is_alive():
            shut_both_ways(self.conn)
            self.thread.join()


def _event(channel: _Channel, answer: _Answer, event, finish: Callable,
           limit: time_limit.Limit) -> tuple | None:
    """What one event means for its request: ``(result,)`` or ``(exception,)`` once it has
    ended, None while it runs. An answer whose stream's client went away is cancelled."""
    prep = answer.prep
    if isinstance(event, wire.Stops) and prep.stream:
        answer.sender = TokenSender(prep.stream, [*prep.request.stop, *event.stops],
                                    strip=prep.request.prompt is None)
    elif isinstance(event, wire.Text):
        answer.text += event.t
        if answer.sender is not None and not answer.sender(answer.text):  # client went away
            channel.cancel(event.rid)
    elif isinstance(event, wire.Done):
        if _late(limit, answer.sender):  # e.g. its worker was stopped past the limit
            raise time_limit.timed_out(limit)
        completion = event.completion
        result = finish(prep, Decoded(completion, event.request, event.n_threads,
                                      event.engine.model_dump(),
                                      event.load.model_dump() if event.load else None))
        if answer.sender is None and prep.stream:  # the result only (tokens=False)
            answer.sender = TokenSender(prep.stream, [])
        if answer.sender is not None:  # the driver has it now, not at the task's end
            answer.sender.finish(completion.text, result)
        return (result,)
    elif isinstance(event, wire.Failed):
        answer.end_stream()
        return (_exception(event),)
    return None


def _end_streams(answers: list[_Answer], results: list) -> None:
    """The task failed: the streams of the answers it had not ended end without a result."""
    for answer, result in zip(answers, results):
        if result is None:
            answer.end_stream()


def _late(limit: time_limit.Limit, sender: TokenSender | None) -> bool:
    """Whether an answer arrived past the task's limit (its stream, if any, is ended)."""
    late = limit is not None and time_limit.left(limit) <= 0
    if late and sender is not None:
        sender.finish(None)
    return late


def embed(spec: ModelSpec, engine: dict, request: EmbedRequest) -> tuple[Embeddings, dict]:
    """Embeddings from the node's engine for ``spec`` (started when needed), and which engine
    made them. An input it refuses raises :class:`PromptTooLongError` or ``ValueError``
    naming it; a lost engine :class:`EngineLost` (the task is retried)."""
    limit = time_limit.deadline()
    try:
        with connect(spec, engine, limit) as conn:
            conn.send_bytes(wire.encode(wire.Order(op=wire.Op.EMBED, embed=request)))
            left = time_limit.left(limit)
            if left is not None and not conn.poll(max(left, 0.0)):
                raise time_limit.timed_out(limit)  # the engine finishes it, unheard
            event = wire.read_event(conn.recv_bytes())
            time_limit.check(limit)
    except (EOFError, OSError) as exc:
        raise EngineLost(f"the node engine for {spec.path} ended while it held these inputs "
                         f"({type(exc).__name__}: {exc}); they are retried on a new "
                         f"engine") from None
    if isinstance(event, wire.Embedded):
        return event.embeddings, event.engine.model_dump()
    if isinstance(event, wire.Failed):
        raise _exception(event)
    raise EngineLost(f"the node engine for {spec.path} answered an embed order with "
                     f"{event.event!r}")
