"""Batch output: one JSON line per prompt, written as soon as it is answered, resumable.

Every input line yields exactly one output line, in the native form::

    {"id", "prompt", "ok", "response", "agents", "latency_s", "completion_tokens",
     "prompt_tokens", "finish_reason", "cached", "error", "error_kind", "error_code",
     "finished_at", "line", "provenance"}

or in OpenAI's batch output form (answers in the output, failures in ``OUT.errors.jsonl``).
Each line is written and flushed as soon as its prompt completes, so a killed run loses
nothing finished. ``provenance`` says how the answer was made: the site, and for each agent
the model file and its sha256, the software versions, the exact messages and sampler settings
with the seed, the job, host and worker, start and end (see
:mod:`hpc_chat.worker.provenance`).

``error_kind`` says why a line failed: ``input`` (the line itself: malformed, empty, too long
for the context; final until the line changes) or ``runtime`` (a worker, a timeout, the
scheduler; worth another try); ``error_code`` says what failed
(:class:`hpc_chat.protocol.failure.FailureCode`: ``model_not_found``,
``context_length_exceeded``, ``invalid_request``, ``history_unavailable``,
``generation_failed``), and gives an OpenAI error entry its status. Readers
(``hpc-chat stats``, resume) take the last line of each id; what resume skips is decided
in :mod:`hpc_chat.batch.run`.
"""

from __future__ import annotations

import json
import math
import os
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TextIO

from hpc_chat.batch.input import STDIO, BatchItem, key_hash
from hpc_chat.batch.outcomes import OutcomeIndex, errors_path, line_key
from hpc_chat.driver.stats import RequestRecord, Summary, summarize
from hpc_chat.errors import InputError
from hpc_chat.openai import batch as oa
from hpc_chat.openai import batch_output as ob
from hpc_chat.openai import completions
from hpc_chat.openai.chat import logprobs_of
from hpc_chat.openai.embeddings import EmbeddingLine
from hpc_chat.protocol.failure import FailureCode, failure_fields, status_of
from hpc_chat.protocol.result import provenance_of
from hpc_chat.util.outputfiles import (
    PRIVATE,
    ensure_line_start,
    open_append,
    own_link,
    replace_whole,
)
from hpc_chat.util.outputlock import OutputLock

OUTPUT_KEYS = ("id", "prompt", "ok", "response", "agents", "latency_s", "completion_tokens",
               "prompt_tokens", "cached_tokens", "finish_reason", "cached", "error",
               "error_kind", "error_code")
def json_lines(path: Path):
    """The JSON objects of a file, skipping what cannot be read (a line cut short by a kill,
    huge numbers, deep nesting): that request simply runs again."""
    if not path.exists():
        return
    with path.open("rb") as fh:
        for raw in fh:
            try:
                obj = json.loads(raw)
            except (ValueError, RecursionError):
                continue
            if isinstance(obj, dict):
                yield obj


def failed_result(error: str | None, code: FailureCode,
                  latency_s: float = 0.0) -> dict[str, Any]:
    """A request's result when it failed before any agent answered, in the workflow's form
    (its kind, ``input`` or ``runtime``, follows from the code: see the module's docstring)."""
    return {**dict.fromkeys(OUTPUT_KEYS), "ok": False, "agents": [], "latency_s": latency_s,
            "completion_tokens": 0, "prompt_tokens": 0, "cached_tokens": 0, "cached": False,
            "error": error,
            **failure_fields(code)}


def unknown_model(model: str, known: Iterable[str]) -> dict[str, Any]:
    """The result of a line whose model is none of ``known`` (a 404:
    :func:`hpc_chat.protocol.failure.status_of`)."""
    return failed_result(f"unknown model {model!r}; the models are: {', '.join(known)}",
                         FailureCode.MODEL_NOT_FOUND)


def _writable(line: dict[str, Any]) -> dict[str, Any]:
    """The line, or, when it cannot be JSON (an answer of a type JSON has no form for), an
    error line for its id: one bad answer never ends the batch."""
    try:
        json.dumps(line)
        return line
    except (TypeError, ValueError, RecursionError) as exc:
        return {**dict.fromkeys(OUTPUT_KEYS),
                **{k: line.get(k) for k in ("id", "prompt", "finished_at")},
                "ok": False, "agents": [], "provenance": None,
                **failure_fields(FailureCode.GENERATION_FAILED),
                "error": f"the answer could not be written as JSON: "
                         f"{type(exc).__name__}: {exc}"}


def dumps_line(record: dict[str, Any]) -> str:
    """One output line's JSON, without its newline (a lone surrogate from the input is
    escaped)."""
    text = json.dumps(record, ensure_ascii=False)
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:  # a lone surrogate from the input: escape it
        return json.dumps(record, ensure_ascii=True)


class OutputWriter:
    """Appends result lines and flushes each one. Opened before any work starts, so an output
    path that cannot be written fails at once.

    ``style`` is ``native`` (one line per input line) or ``openai`` (answers in the output,
    failures in :func:`errors_path`, opened when the first failure comes; with ``-``, both go
    to standard output)."""

    def __init__(self, path: str | os.PathLike, *, resume: bool, style: str = "native",
                 mode: int = PRIVATE):
        self.written = 0
        self.mode = mode  # of the files this run creates (:mod:`hpc_chat.util.outputfiles`)
        self.style = style
        self.totals = Summary()  # what this run wrote, for its summary (not the lines)
        self._errors: TextIO | None = None
        if str(path) == STDIO:
            if resume:
                raise InputError("--resume needs an output file to resume from, not '-'")
            self.path, self._fh = Path("<stdout>"), sys.stdout
            self.errors_path = self.path
            return
        self.path = Path(path)
        self.errors_path = errors_path(self.path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise InputError(f"{self.path}: cannot write the output: "
                             f"{exc.strerror or exc}") from None
        # One run at a time appends to an output; a symlink to it (one of the user's own)
        # shares its lock.
        names = [self.path] + ([self.errors_path] if style == "openai" else [])
        for name in names:
            own_link(name)
        self._lock = OutputLock(self.path.resolve())
        try:
            for existing in names:
                if existing.exists() and not resume and existing.stat().st_size > 0:
                    raise InputError(f"{existing}: the output file exists; pass --resume to "
                                     f"continue it, or choose another path")
            self._fh: TextIO = self._open(self.path)
        except BaseException:
            self._lock.release()
            raise

    def _open(self, path: Path) -> TextIO:
        fh = os.fdopen(open_append(path, mode=self.mode), "a", encoding="utf-8")
        ensure_line_start(path, fh)
        return fh

    def write(self, item: BatchItem, result: dict[str, Any] | None, *, finished_at: float,
              counted: bool = True) -> dict[str, Any]:
        """Write the outcome of ``item`` (``result`` None: the line cannot run); returns the
        native line, which the run's summary counts unless ``counted`` is false (an earlier
        answer copied to a new line number)."""
        line = native_line(item, result, finished_at)
        if self.style == "openai":
            record, failed = openai_record(item, line)
            fh = self._errors_file() if failed else self._fh
        else:
            record, fh = line, self._fh
        try:
            fh.write(dumps_line(record) + "\n")
            fh.flush()
        except OSError as exc:
            raise InputError(f"{self.path}: cannot write the output ({exc.strerror or exc}); "
                             f"{self.written} lines were written before; free space and rerun "
                             f"with --resume") from None
        self.written += 1
        if counted:
            for record in records_from_lines([line]):
                self.totals.add(record)
        return line

    def _errors_file(self) -> TextIO:
        if self._errors is None:
            self._errors = self._fh if self.path == self.errors_path \
                else self._open(self.errors_path)
        return self._errors

    def close(self) -> None:
        if self._fh is not sys.stdout:
            if self._errors is not None:
                self._errors.close()
            self._fh.close()
            try:
                if self.style == "openai":
                    compact_openai(self.path, self.errors_path)
            finally:
                self._lock.release()


def native_line(item: BatchItem, result: dict[str, Any] | None,
                finished_at: float) -> dict[str, Any]:
    """The native output line of ``item``'s outcome (``result`` None: the line cannot run)."""
    if result is None:
        line = {**failed_result(item.error, FailureCode.INVALID_REQUEST), "id": item.id,
                "prompt": item.prompt}
    else:
        line = {"id": item.id, **{k: result.get(k) for k in OUTPUT_KEYS if k != "id"}}
        line["prompt"] = item.prompt
    line["finished_at"] = round(finished_at, 3)
    line["line"] = item.line  # the input line it answers
    if item.key is not None:  # an OpenAI request: resume compares its fingerprint
        line["request"] = item.key
    line["provenance"] = provenance_of(result)
    if result is not None and result.get("embedding") is not None:
        line["embedding"] = result["embedding"]  # OpenAI's list: /v1/embeddings lines
    if result is not None and (logprobs := logprobs_of(result)) is not None:
        line["logprobs"] = logprobs  # asked for (logprobs: true), one agent's tokens
    if line["provenance"] and item.request and item.request.ignored:
        line["provenance"]["ignored_params"] = item.request.ignored  # accepted, not used
    return _writable(line)


def openai_record(item: BatchItem, line: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """A native line in OpenAI's batch output shape, and whether it is a failure (which goes
    to the errors file)."""
    finished = line["finished_at"]
    model = item.request.model if item.request else \
        ",".join(line.get("agents") or []) or oa.ROUTED_MODEL
    if line["ok"] and line.get("embedding") is not None:
        return ob.embedding_answer_line(item.id, line["embedding"], line=item.line,
                                        request_fingerprint=item.fingerprint,
                                        finished_at=finished), False
    if line["ok"]:
        req = item.request  # a /v1/completions line's answer is a text_completion
        text = (req.prompt, req.echo) if getattr(req, "url", None) == completions.URL else None
        record = ob.answer_line(item.id, model, line, line=item.line,
                                request_fingerprint=item.fingerprint, finished_at=finished,
                                provenance=line["provenance"], text_completion=text,
                                responses_body=getattr(req, "responses_body", None))
        record["hpc_chat"]["latency_s"] = line["latency_s"]
        return record, False
    problem = item.problem
    status, code, param = (problem.status, problem.code, problem.param) if problem else \
        status_of(line)
    if isinstance(item.request, EmbeddingLine) and param == "body.messages":
        param = "body.input"  # an input too long for the context
    custom_id = item.id if isinstance(item.id, str) else None
    return ob.error_line(custom_id, line["error"] or "failed", line=item.line,
                         kind=line["error_kind"] or "runtime",
                         request_fingerprint=item.fingerprint, finished_at=finished,
                         status=status, code=code, param=param,
                         provenance=line["provenance"]), True


def compact_openai(output: Path, errors: Path) -> None:
    """Leave each request once across an OpenAI output and its errors file: its last outcome.

    A resumed run appends (a request answered after an earlier failure, an edited request
    answered again); OpenAI batch readers expect each custom_id once, so at the end of a run,
    still under the output's lock, both files are rewritten (whole, then renamed) without the
    superseded lines and without lines cut short by a killed run.

    Both files are read twice, a line at a time, never held: the first pass keeps each
    request's last outcome (a 64-bit hash of its key and where it is), the second copies the
    lines kept.
    """
    last: dict[int, tuple[float, int]] = {}  # key hash -> (finished_at, sequence) of the last
    keyed = dropped = 0
    for _, seq, _, key, finished in _outcome_lines(output, errors):
        if key is False:
            dropped += 1  # cut short: dropped
        elif key is not None:
            keyed += 1
            if (finished, seq) > last.get(key, (-math.inf, 0)):
                last[key] = (finished, seq)
    if not dropped and len(last) == keyed:
        return  # nothing superseded, nothing cut short

    def kept(index: int):
        for at, seq, raw, key, _ in _outcome_lines(output, errors):
            if at == index and key is not False and (key is None or last[key][1] == seq):
                yield raw.rstrip(b"\r\n") + b"\n"
    # The errors file first: the output's lines come first in the sequence, so rewriting the
    # errors file leaves the output's sequence numbers as the first pass counted them.
    for index, path in ((1, errors), (0, output)):
        if not path.exists():
            continue
        if index == 1 and next(kept(1), None) is None:
            path.unlink(missing_ok=True)
            continue
        replace_whole(path, kept(index))


def _outcome_lines(output: Path, errors: Path):
    """``(file index, sequence, raw line, key, finished_at)`` of both files' lines in order:
    key False for a line that cannot be read, None for one that is no request's outcome,
    else the 64-bit hash of the request's key."""
    seq = 0
    for index, path in enumerate((output, errors)):
        if not path.exists():
            continue
        with path.open("rb") as fh:
            for raw in fh:
                seq += 1
                try:
                    obj = json.loads(raw)
                except (ValueError, RecursionError):
                    yield index, seq, raw, False, 0.0
                    continue
                found = ob.outcome(obj) if ob.is_output_line(obj) else None
                try:
                    key = line_key(found) if found else None
                except (ValueError, TypeError, RecursionError):
                    key = None
                yield index, seq, raw, None if key is None else key_hash(key), \
                    found["finished_at"] if found else 0.0


def records_from_lines(lines: Iterable[dict[str, Any]]) -> list[RequestRecord]:
    records = []
    for obj in lines:
        try:
            end = float(obj.get("finished_at") or 0.0)
            latency = float(obj.get("latency_s") or 0.0)
            if not (math.isfinite(end) and math.isfinite(latency)):
                continue  # a hand-edited line: Infinity or NaN would spoil every figure
            records.append(RequestRecord(
                ok=obj.get("ok") is True, start=end - latency, end=end,
                completion_tokens=int(obj.get("completion_tokens") or 0),
                prompt_tokens=int(obj.get("prompt_tokens") or 0),
                cached=obj.get("cached") is True,
                agents=tuple(str(a) for a in obj.get("agents") or ())))
        except (TypeError, ValueError, OverflowError):
            continue  # a hand-edited line with numbers that are not numbers
    return records


def stats_from_output(path: str | os.PathLike) -> dict[str, Any]:
    """``hpc-chat stats``: the statistics of a finished (or partial) batch output."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such batch output file")
    with OutcomeIndex(path) as last:
        if not last.count():
            raise InputError(f"{path}: no result lines found: every line of a batch output "
                             f"has \"id\" and \"ok\" (is this the input file?)")
        summary = summarize(records_from_lines(last.lines()))
    del summary["model_loads"]  # not recorded in output lines
    return summary
