"""A corpus embedded: a file of texts in, one JSON line per text out, in input order, resumable.

``hpc-chat embed`` reads the same inputs as ``hpc-chat batch`` (plain text, one text a line, or
JSONL ``{"id", "prompt"}``), and writes, in input order, one
line per input: ``{"id", "line", "ok": true, "embedding": [...], "tokens", "agent", "model",
"dimensions"}``, or ``{"id", "line", "ok": false, "error", "error_kind", "error_code"}`` for an
input that could not be embedded (empty, a bad line, longer than the context), and the run goes
on. A line too broken to have an id (an empty one) has ``"id": null``, as in ``batch``.

The texts are embedded in slices of :data:`hpc_chat.driver.embeddings.SLICE`, each a task of
its own; :data:`WINDOW` slices are in flight at once, so every worker and pilot job has work;
finished slices are written as soon as the slices before them are. Resume (``--resume``) skips
every id already embedded; ids that failed run again. The output is locked (one run at a time)
and private (0600) unless asked otherwise, as ``batch``'s is.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hpc_chat.batch.input import STDIO, BatchItem, id_key, read_batch
from hpc_chat.batch.outcomes import OutcomeIndex
from hpc_chat.batch.output import OUTPUT_KEYS, failed_result
from hpc_chat.driver.embeddings import SLICE, embed
from hpc_chat.errors import InputError
from hpc_chat.openai.embeddings import EmbeddingLine, embedding_list
from hpc_chat.protocol.embedding import named_input
from hpc_chat.protocol.failure import FailureCode, failure_code, failure_fields
from hpc_chat.util.outputfiles import (
    PRIVATE,
    ensure_line_start,
    open_append,
    own_link,
    replace_whole,
)
from hpc_chat.util.outputlock import OutputLock

WINDOW = 16  # slices in flight


class EmbedRun:
    """An input against its output, read and opened before any worker starts."""

    def __init__(self, input_path: str, output: str, *, fmt: str = "auto",
                 resume: bool = False, mode: int = PRIVATE):
        if output == STDIO:
            raise InputError("embed needs an output file (-o FILE): its lines are resumed")
        path = Path(output)
        if input_path != STDIO and path.exists() and Path(input_path).exists() and \
                os.path.samefile(input_path, output):
            raise InputError(f"{output}: the output is the input file; choose another output")
        self.items = read_batch(input_path, fmt)
        if self.items.format == "openai":
            raise InputError(f"{input_path}: an OpenAI batch file; embed takes text (one input "
                             f"a line) or JSONL lines {{\"id\", \"prompt\"}}")
        path.parent.mkdir(parents=True, exist_ok=True)
        own_link(path)
        self._lock = OutputLock(path.resolve())
        try:
            if path.exists() and path.stat().st_size > 0 and not resume:
                raise InputError(f"{output}: the output file exists; pass --resume to continue "
                                 f"it, or choose another path")
            if resume:
                with OutcomeIndex(path) as previous:
                    self.todo = [it for it in self.items
                                 if not _answered(previous.get(id_key(it.id)))]
            else:
                self.todo = list(self.items)
            self._fh = os.fdopen(open_append(path, mode=mode), "a", encoding="utf-8")
            ensure_line_start(path, self._fh)  # after a line cut short by a kill
        except BaseException:
            self._lock.release()
            raise
        self.path = path
        self.skipped = len(self.items) - len(self.todo)
        self.written = self.failed = 0

    def close(self) -> None:
        self._fh.close()
        self._lock.release()

    def write(self, item: BatchItem, line: dict[str, Any]) -> None:
        self._fh.write(json.dumps({"id": item.id, "line": item.line, **line},
                                  ensure_ascii=False) + "\n")
        self._fh.flush()  # a killed run keeps every line written
        self.written += 1
        self.failed += not line["ok"]

    async def run(self, workflow, agent: str,
                  on_slice: Callable[[int, int], None] | None = None) -> None:
        """Embed every input to do with ``agent``, writing in input order."""
        slices = [self.todo[i:i + SLICE] for i in range(0, len(self.todo), SLICE)]
        limit = asyncio.Semaphore(WINDOW)

        async def one(items: list[BatchItem]) -> list[dict[str, Any]]:
            async with limit:
                return await embed_items(workflow, agent, items)

        tasks = [asyncio.ensure_future(one(s)) for s in slices]
        try:
            for items, task in zip(slices, tasks):  # in order: later slices wait here
                for item, line in zip(items, await task):
                    self.write(item, line)
                if on_slice is not None:
                    on_slice(len(items), sum(1 for it in items if it.error is None))
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


async def embed_items(workflow, agent: str, items: list[BatchItem]) -> list[dict[str, Any]]:
    """The output line of each item: its vector, or why it has none. An input the model
    refuses (named by its index) fails alone: the slice is embedded again without it."""
    lines: list[dict[str, Any] | None] = [None] * len(items)
    todo = []
    for i, it in enumerate(items):
        text = it.prompt
        if it.error is None and not (isinstance(text, str) and text.strip()):
            it.error = f"line {it.line}: nothing to embed"
        if it.error is not None:
            lines[i] = _failed(it.error, FailureCode.INVALID_REQUEST)
        else:
            todo.append(i)
    while todo:
        try:
            out = await embed(workflow, agent, [items[i].prompt for i in todo])
        except Exception as exc:  # noqa: BLE001 - every failure becomes an output line
            code, named = failure_code(exc), named_input(str(exc))
            if code.kind == "input" and named is not None and named[0] < len(todo):
                lines[todo.pop(named[0])] = _failed(f"the input {named[1].lstrip(': ')}", code)
                continue
            for i in todo:  # the whole slice failed at run time: --resume runs it again
                lines[i] = _failed(str(exc), code)
            break
        for i, vector, tokens in zip(todo, out.vectors, out.tokens):
            lines[i] = {"ok": True, "embedding": vector, "tokens": tokens, "agent": agent,
                        "model": out.model, "dimensions": out.dimensions}
        break
    return lines  # type: ignore[return-value]


def _failed(error: str, code: FailureCode) -> dict[str, Any]:
    return {"ok": False, "error": error, **failure_fields(code)}


def write_npy(output: Path, target: Path) -> int:
    """The vectors of ``output``'s embedded lines, in its order, as a float32 ``.npy`` at
    ``target``, and their ids, one JSON value a line, at ``target`` + ``.ids``; the row
    count."""
    import numpy as np

    rows, ids = [], []
    with OutcomeIndex(output) as last:
        for line in last.lines():  # the last line of each id, in file order
            if line.get("ok") is True and isinstance(line.get("embedding"), list):
                rows.append(line["embedding"])
                ids.append(line["id"])
    if not rows:
        raise InputError(f"{output}: no embedded line to write to {target}")
    data = io.BytesIO()
    np.save(data, np.asarray(rows, dtype=np.float32))
    listed = Path(f"{target}.ids")
    for path, content in ((target, data.getvalue()),
                          (listed, "".join(json.dumps(i) + "\n" for i in ids).encode())):
        own_link(path, "the --npy output")  # never through another user's link
        try:
            replace_whole(path, content)  # new files private (0600), written whole
        except OSError as exc:
            raise InputError(f"{path}: cannot write it: {exc.strerror or exc}") from None
    return len(rows)


# ----------------------------------------------------------------- /v1/embeddings batch lines

async def embedding_result(workflow, req: EmbeddingLine) -> dict[str, Any]:
    """An OpenAI batch file's ``/v1/embeddings`` line answered by the workflow's workers, in
    the form :class:`~hpc_chat.batch.output.OutputWriter` writes."""
    start = time.time()
    try:
        out = await embed(workflow, req.model, req.inputs)
    except Exception as exc:  # noqa: BLE001 - the line's error entry says why
        return failed_result(str(exc), failure_code(exc), round(time.time() - start, 4))
    body = embedding_list(req.model, out.vectors, out.prompt_tokens, req.encoding,
                          extra={"model": out.model, "dimensions": out.dimensions,
                                 "pooling": out.pooling})
    return embedding_answer(body, req.model, start)


def embedding_answer(body: dict[str, Any], model: str, started: float) -> dict[str, Any]:
    """A result whose answer is OpenAI's embedding list (from the workers or a server)."""
    usage = body.get("usage") if isinstance(body.get("usage"), dict) else {}
    return {**dict.fromkeys(OUTPUT_KEYS), "ok": True, "embedding": body, "agents": [model],
            "latency_s": round(time.time() - started, 4), "completion_tokens": 0,
            "prompt_tokens": int(usage.get("prompt_tokens") or 0), "cached_tokens": 0}


def _answered(last) -> bool:
    return last is not None and last.ok
