"""``echo``: a built-in model that needs no GGUF file, for testing the plumbing.

It answers deterministically from the last user message, at a pace the caller sets, so tests and
site dry runs can make work of a *known* duration whatever the machine's speed::

    echo                                   # the message back, instantly
    echo?tokens=64&token_s=0.05&load_s=2   # 64 tokens, 0.05 s each, 2 s to "load the model"

``tokens`` is the answer's length in tokens (words here): the message's words, repeated until
there are that many (default: the message's own length, so the answer is the message);
``max_tokens`` still cuts it, with ``finish_reason: length``. ``token_s`` is the time of one
decode step: an unbatched answer of N tokens takes N steps, and a batch of sequences advances
one token each per step, as llama.cpp's batched decoding does. ``load_s`` is paid once per
engine, as a model load is.

The engines here have the interface of :class:`~hpc_chat.llm.engine.ChatEngine` and
:class:`~hpc_chat.llm.batched.BatchedEngine` that the worker logic uses, so an echo request goes
through the same batching, retries, usage counts, statistics and history as a real one.

With a ``response_format`` the answer is the smallest JSON the schema accepts, its strings taken
from the message (:mod:`hpc_chat.structured.instance`), a token per space-separated piece; a raw
``grammar`` is refused (the echo model has no vocabulary to constrain).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import threading
import time
from collections import deque
from functools import partial
from urllib.parse import parse_qsl

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from hpc_chat.errors import FormatError, ModelNotFoundError
from hpc_chat.llm.feed import Feed, Job
from hpc_chat.protocol.embedding import Embeddings, Pooling, input_too_long
from hpc_chat.protocol.output_format import FormatKind, OutputFormat
from hpc_chat.protocol.request import Completion, GenRequest, prompt_too_long
from hpc_chat.structured.instance import instance
from hpc_chat.structured.tools import turn_text

ECHO = "echo"


class EchoPace(BaseModel):
    """The options of an ``echo?...`` model name."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    tokens: int | None = Field(None, ge=1, le=32768)
    token_s: float = Field(0.0, ge=0.0, le=60.0)
    load_s: float = Field(0.0, ge=0.0, le=3600.0)

    def name(self) -> str:
        """The canonical model name: equal paces give equal names (one engine per pace)."""
        parts = [f"{k}={v}" for k, v in self.model_dump(exclude_defaults=True).items()]
        return ECHO + ("?" + "&".join(parts) if parts else "")


def is_echo(name: str | None) -> bool:
    return bool(name) and (name == ECHO or name.startswith(ECHO + "?"))


def parse_echo(name: str) -> EchoPace:
    """``echo?tokens=64&token_s=0.05`` -> :class:`EchoPace`, or an error naming the bad option."""
    query = name[len(ECHO) + 1:] if name.startswith(ECHO + "?") else ""
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query))
    except ValueError:
        raise ModelNotFoundError(f"model {name!r}: write echo options as "
                                 f"echo?tokens=64&token_s=0.05&load_s=2") from None
    options = dict(pairs)
    if len(options) != len(pairs):
        raise ModelNotFoundError(f"model {name!r}: an option is given twice")
    try:
        return EchoPace.model_validate(options)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(p) for p in err["loc"])
        known = ", ".join(EchoPace.model_fields)
        hint = f" (echo options: {known})" if err["type"] == "extra_forbidden" else ""
        raise ModelNotFoundError(f"model {name!r}: {key}: {err['msg']}{hint}") from None


def _words(text: str) -> list[str]:
    return text.split()


def _formatted(words: list[str], max_tokens: int, output: OutputFormat) -> tuple[str, int, str]:
    """The smallest JSON answer the format accepts, its strings from the message's words; a
    token per space-separated piece, so ``max_tokens`` cuts it as it would a model's."""
    if output.kind is FormatKind.GRAMMAR:
        raise FormatError("grammar: the echo model cannot follow a raw GBNF grammar (it "
                          "writes JSON for response_format); use a real model", param="grammar")
    if output.text_allowed:  # tool_choice auto: the echo model answers in words
        text = " ".join(words)
    else:
        value = {"echo": " ".join(words)} if output.kind is FormatKind.JSON_OBJECT else \
            instance(output.json_schema or {}, words)
        text = json.dumps(value, ensure_ascii=False)
    ends = [m.end() for m in re.finditer(r"\S+", text)]
    if len(ends) > max_tokens:
        return text[:ends[max_tokens - 1]], max_tokens, "length"
    return text, len(ends), "stop"


class Pace:
    """Decode steps of ``token_s`` each, on a schedule: each step ends at ``start + k x
    token_s``, so n steps last n x token_s, not that plus every sleep's overshoot.

    Work, not a deadline: a process stopped (SIGSTOP) or starved for longer than a step is not
    credited with the time it did not run. The schedule moves on by the delay, so what is left
    of the answer still takes its time after the process resumes, as with a real model.
    """

    def __init__(self, token_s: float):
        self.token_s, self.start, self.steps = token_s, time.perf_counter(), 0

    def step(self) -> None:
        self.steps += 1
        if not self.token_s:
            return
        late = time.perf_counter() - (self.start + (self.steps - 1) * self.token_s)
        if late > 2 * self.token_s:  # the process did not run: this step starts now
            self.start += late - self.token_s
        delay = self.start + self.steps * self.token_s - time.perf_counter()
        if delay > 0:
            time.sleep(delay)


class EchoEngine:
    """The unbatched engine: one answer at a time, ``token_s`` per generated token."""

    n_threads = 1

    def __init__(self, spec):
        self.spec = spec
        self.pace = parse_echo(spec.path)
        self._lock = threading.Lock()
        start = time.perf_counter()
        time.sleep(self.pace.load_s)
        self.load_s = time.perf_counter() - start
        self.calls = 0

    def count_tokens(self, text: str) -> int:
        return len(_words(text))

    def compose(self, messages: list[dict[str, str]], max_tokens: int,
               stop: list[str] | None,
               output: OutputFormat | None = None) -> tuple[str, int, str]:
        """The answer's text, its length in tokens and the finish reason."""
        last = next((m["content"] for m in reversed(messages)
                     if m.get("role") in ("user", "tool")), "")
        words = _words(last) or [ECHO]
        if output is not None:
            return _formatted(words, max_tokens, output)
        want = self.pace.tokens or len(words)
        out = [words[i % len(words)] for i in range(min(want, max_tokens))]
        finish = "length" if want > max_tokens else "stop"
        # The message as written (line breaks, spacing) when it is the whole answer.
        text = last.strip() if want == len(words) <= max_tokens and last.strip() else \
            " ".join(out)
        for s in stop or []:
            if s and s in text:
                text, finish = text[:text.index(s)], "stop"
                out = _words(text)
        return text.strip(), len(out), finish

    def prompt_size(self, messages: list[dict[str, str]]) -> int:
        return sum(self.count_tokens(turn_text(m)) for m in messages)

    def complete(self, req: GenRequest, *, loaded_now: bool = False, on_text=None,
                 until=None):
        return self.chat(req.messages, loaded_now=loaded_now, on_text=on_text,
                         output=req.output, until=until, **req.sampling())

    def chat(self, messages: list[dict[str, str]], *, max_tokens: int = 256,
             stop: list[str] | None = None, loaded_now: bool = False, on_text=None,
             output: OutputFormat | None = None, until=None, **sampling):
        """Answer like :meth:`ChatEngine.chat` (other sampling settings change nothing);
        ``on_text`` hears the text so far after each token, and ``until`` stops it, as
        there."""
        text, n, finish = self.compose(messages, max_tokens, stop, output)
        with self._lock:  # one answer at a time per engine, as with a real model
            start = time.perf_counter()
            pace = Pace(self.pace.token_s)
            ends = [m.end() for m in re.finditer(r"\S+", text)]  # the text after each token
            for i in range(n):
                if self.pace.token_s:
                    pace.step()  # a step per token: a timeout lands between them
                if (on_text is not None and i < len(ends) and not on_text(text[:ends[i]])) \
                        or (until is not None and until()):
                    cut = ends[min(i, len(ends) - 1)] if ends else 0
                    text, n, finish = text[:cut], i + 1, "cancelled"
                    break
            self.calls += 1
            elapsed = time.perf_counter() - start
        return Completion(text=text, finish_reason=finish,
                          prompt_tokens=self.prompt_size(messages), completion_tokens=n,
                          model_load_s=self.load_s, model_loaded_now=loaded_now,
                          generation_s=elapsed, extra={"echo": True})


class EchoBatchedEngine:
    """Continuous batching at the echo pace: each step advances every running answer by one
    token and costs ``token_s``; a finished answer frees its slot for the next request."""

    def __init__(self, engine: EchoEngine, n_seq: int):
        self.engine = engine
        self.n_seq = n_seq
        self.n_ctx_seq = engine.spec.n_ctx
        self.template_stops: list[str] = []  # no chat template, so nothing to stop on
        self.lock = threading.Lock()
        self.n_holders = 0  # no prompt cache
        self.cap = n_seq  # it always runs every slot

    def close(self) -> None:
        """Nothing to free (the real engine frees its llama.cpp context)."""

    def generate(self, requests: list[GenRequest], on_text: list | None = None) -> list:
        results: list = [None] * len(requests)
        listeners = on_text or [None] * len(requests)
        feed = Feed([Job(req, partial(results.__setitem__, i), listeners[i])
                     for i, req in enumerate(requests)])
        feed.close()
        self.run(feed)
        return results

    def run(self, feed: Feed) -> None:
        """Answer the feed's jobs until it is closed and empty (as the real engine's ``run``)."""
        with self.lock:
            queue: deque = deque()
            active: dict[int, list] = {}  # id -> [prompt size, text, tokens, finish, left, t0, job]
            pace = Pace(self.engine.pace.token_s)
            ids = iter(range(1 << 62))
            while True:
                for job in feed.take(self.n_seq - len(active) - len(queue),
                                     block=not active and not queue):
                    req = job.req
                    size = self.engine.prompt_size(req.messages)
                    if size + req.max_tokens > self.n_ctx_seq:
                        job.done(prompt_too_long(size, req.max_tokens, self.n_ctx_seq))
                        continue
                    try:
                        made = self.engine.compose(req.messages, req.max_tokens, req.stop,
                                                  req.output)
                    except FormatError as exc:
                        job.done(exc)
                        continue
                    queue.append((job, size, *made))
                if not queue and not active:
                    if feed.closed:
                        return
                    continue
                while queue and len(active) < self.n_seq:
                    job, size, text, n, finish = queue.popleft()
                    active[next(ids)] = [size, text, n, finish, n, time.perf_counter(), job]
                if any(a[4] > 0 for a in active.values()):
                    pace.step()  # one decode step for every running answer
                for i in list(active):
                    a = active[i]
                    a[4] -= 1
                    done = a[2] - a[4]
                    ends = [m.end() for m in re.finditer(r"\S+", a[1])]
                    if a[4] > 0 and 0 < done <= len(ends) and \
                            not a[6].listen(a[1][:ends[done - 1]]):
                        a[1], a[2], a[3], a[4] = a[1][:ends[done - 1]], done, "cancelled", 0
                    if a[4] <= 0:
                        size, text, n, finish, _, t0, job = active.pop(i)
                        job.done(Completion(
                            text=text, finish_reason=finish, prompt_tokens=size,
                            completion_tokens=n, model_load_s=self.engine.load_s,
                            model_loaded_now=False, generation_s=time.perf_counter() - t0,
                            extra={"batched": True, "echo": True,
                                   **_logprobs(text, job.req.logprobs)}))


def _logprobs(text: str, top: int | None) -> dict:
    """The echo model is sure of each token it writes (its words): log-probability 0, and no
    other token is likely (``top_logprobs`` holds the token itself)."""
    if top is None:
        return {}
    tokens = [w if i == 0 else f" {w}" for i, w in enumerate(_words(text))]
    return {"logprobs": [{"token": t, "logprob": 0.0, "bytes": list(t.encode()),
                          "top_logprobs": [{"token": t, "logprob": 0.0,
                                            "bytes": list(t.encode())}][:top]}
                         for t in tokens]}


ECHO_DIMENSIONS = 64


class EchoEmbedder:
    """Embeddings without a model, for tests of the plumbing: each word (each token id of a
    token array) adds a signed unit to one of 64 dimensions chosen by its sha256, and the sum is
    scaled to length 1. The same input always gives the same vector; inputs with no word in
    common are orthogonal more often than not."""

    def __init__(self, engine: EchoEngine, pooling=None):
        self.engine = engine
        self.n_ctx = engine.spec.n_ctx

    def close(self) -> None:
        """Nothing to free."""

    def embed(self, inputs: list) -> Embeddings:
        """One step of the echo pace per input (``echo?token_s=0.05``: 20 inputs a second)."""
        start = time.perf_counter()
        pace = Pace(self.engine.pace.token_s)
        vectors, counts = [], []
        for i, item in enumerate(inputs):
            pace.step()
            words = _words(item) if isinstance(item, str) else [str(t) for t in item]
            if not words:
                raise ValueError(f"input[{i}] is empty")
            if len(words) > self.n_ctx:
                raise input_too_long(i, len(words), self.n_ctx)
            vector = [0.0] * ECHO_DIMENSIONS
            for word in words:
                digest = hashlib.sha256(word.lower().encode()).digest()
                vector[digest[0] % ECHO_DIMENSIONS] += 1.0 if digest[1] & 1 else -1.0
            norm = math.sqrt(sum(x * x for x in vector)) or 1.0
            vectors.append([x / norm for x in vector])
            counts.append(len(words))
        return Embeddings(vectors=vectors, tokens=counts, dimensions=ECHO_DIMENSIONS,
                          pooling=Pooling.MEAN, seconds=time.perf_counter() - start)
