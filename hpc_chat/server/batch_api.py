"""OpenAI's Files and Batches API on ``hpc-chat serve``: upload a JSONL file of requests,
create a batch from it, poll it, download its output and error files, cancel it.

The objects are OpenAI's (``file``, ``batch``, paged lists); the state is kept by
:class:`hpc_chat.server.batch_store.BatchStore` and the batches run in the server, on its
workers, by :class:`hpc_chat.server.batch_runner.BatchRunner`. A running batch's object also
carries ``hpc_chat``: its rate since the server started it and an estimate of the time left.
"""

from __future__ import annotations

import re
import time
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse

from hpc_chat.openai.batch import CHAT_URL
from hpc_chat.openai.completions import URL as COMPLETIONS_URL
from hpc_chat.openai.embeddings import EMBEDDINGS_URL
from hpc_chat.openai.responses import URL as RESPONSES_URL
from hpc_chat.server.batch_pilots import requested
from hpc_chat.server.batch_store import new_id
from hpc_chat.server.errors import ApiError
from hpc_chat.server.uploads import receive

ENDPOINTS = (CHAT_URL, COMPLETIONS_URL, RESPONSES_URL, EMBEDDINGS_URL)
WINDOW_S = {"24h": 24 * 3600}
BATCH_KEYS = {"input_file_id", "endpoint", "completion_window", "metadata",
              "output_expires_after"}  # accepted; output files are kept until deleted
FILE_ID = re.compile(r"file-[0-9a-f]{24}")
MAX_LIMIT = 100


def add_batch_routes(app: FastAPI, state) -> None:
    """The ``/v1/files`` and ``/v1/batches`` routes, over ``state.store`` and
    ``state.batches``; 503 on a server whose home's batches another server runs."""

    @app.post("/v1/files")
    async def upload(request: Request):
        here(state)
        file_id = new_id("file-")
        dest = state.store.upload_path(file_id)
        got = await receive(request, dest, state.max_upload)
        purpose = got.fields.get("purpose")
        if purpose != "batch":
            dest.unlink(missing_ok=True)
            raise ApiError(400, f"purpose must be 'batch' (the only files this server takes), "
                                f"not {purpose!r}", code="invalid_request", param="purpose")
        return state.store.add_file(dest, filename=got.filename, purpose=purpose,
                                    file_id=file_id)

    @app.get("/v1/files")
    async def list_files(after: str | None = None, limit: int = 10000, order: str = "desc",
                         purpose: str | None = None):
        here(state)
        if order not in ("asc", "desc"):
            raise ApiError(400, "order must be 'asc' or 'desc'", code="invalid_request",
                           param="order")
        data, more = state.store.files(after=after, limit=_limit(limit, 10000),
                                       ascending=order == "asc", purpose=purpose)
        return _page(data, more)

    @app.get("/v1/files/{file_id}")
    async def get_file(file_id: str):
        here(state)
        return _file(state, file_id)[0]

    @app.get("/v1/files/{file_id}/content")
    async def file_content(file_id: str):
        here(state)
        record, path = _file(state, file_id)
        return FileResponse(path, media_type="application/jsonl",
                            filename=record["filename"])

    @app.delete("/v1/files/{file_id}")
    async def delete_file(file_id: str):
        here(state)
        _file(state, file_id)
        users = state.store.users_of(file_id)
        if users:
            raise ApiError(409, f"the file is the input of {', '.join(users)}, not finished: "
                                f"cancel it first", code="file_in_use")
        state.store.delete_file(file_id)
        return {"id": file_id, "object": "file", "deleted": True}

    @app.post("/v1/batches")
    async def create_batch(request: Request):
        here(state)
        from hpc_chat.server.app import read_json

        record = new_batch(state, await read_json(request, state.max_body))
        state.store.add_batch(record)
        state.batches.launch(record["id"])
        return record

    @app.get("/v1/batches")
    async def list_batches(after: str | None = None, limit: int = 20):
        here(state)
        data, more = state.store.batches(after=after, limit=_limit(limit, MAX_LIMIT))
        return _page([_shown(state, r["id"]) for r in data], more)

    @app.get("/v1/batches/{batch_id}")
    async def get_batch(batch_id: str):
        here(state)
        return _shown(state, batch_id)

    @app.post("/v1/batches/{batch_id}/cancel")
    async def cancel_batch(batch_id: str):
        here(state)
        record = _shown(state, batch_id)
        if record["status"] not in ("validating", "in_progress"):
            raise ApiError(409, f"the batch is {record['status']}: there is nothing to cancel",
                           code="batch_not_cancellable")
        return state.batches.cancel(batch_id)


def here(state) -> None:
    """Refuse on a server whose home's batches another server runs (it holds their lock)."""
    if state.batches is None:
        raise ApiError(503, f"the Batch API of this HPC_CHAT_HOME is run by another server "
                            f"({state.batches_elsewhere}): use that one, or give this one a "
                            f"HPC_CHAT_HOME of its own", code="batches_elsewhere",
                       kind="server_error")


def new_batch(state, body: dict[str, Any]) -> dict[str, Any]:
    """A new batch's record from a create request's body, checked."""
    unknown = sorted(set(body) - BATCH_KEYS)
    if unknown:
        raise ApiError(400, f"unknown parameter {unknown[0]!r}; a batch takes "
                            f"{', '.join(sorted(BATCH_KEYS))}", code="unknown_parameter",
                       param=unknown[0])
    endpoint = body.get("endpoint")
    if endpoint not in ENDPOINTS:
        raise ApiError(400, f"endpoint must be one of {', '.join(ENDPOINTS)}, not "
                            f"{endpoint!r}", code="invalid_request", param="endpoint")
    window = body.get("completion_window")
    if window not in WINDOW_S:
        raise ApiError(400, f"completion_window must be '24h', not {window!r}",
                       code="invalid_request", param="completion_window")
    metadata = body.get("metadata")
    _check_metadata(metadata)
    requested(metadata, state.workflow)  # pilot jobs of its own: checked now, not at the start
    file_id = body.get("input_file_id")
    if not isinstance(file_id, str):
        raise ApiError(400, "input_file_id must name an uploaded file", code="invalid_request",
                       param="input_file_id")
    record, _ = _file(state, file_id, param="input_file_id")
    if record["purpose"] != "batch":
        raise ApiError(400, f"{file_id} is a batch's {record['purpose']} file, not an input "
                            f"(purpose 'batch')", code="invalid_request", param="input_file_id")
    now = int(time.time())
    return {"id": new_id("batch_"), "object": "batch", "endpoint": endpoint, "errors": None,
            "input_file_id": file_id, "completion_window": window, "status": "validating",
            "output_file_id": None, "error_file_id": None, "created_at": now,
            "in_progress_at": None, "expires_at": now + WINDOW_S[window],
            "finalizing_at": None, "completed_at": None, "failed_at": None,
            "expired_at": None, "cancelling_at": None, "cancelled_at": None,
            "request_counts": {"total": 0, "completed": 0, "failed": 0},
            "metadata": metadata, "model": None, "usage": None}


def _check_metadata(metadata: Any) -> None:
    """OpenAI's bounds: up to 16 pairs, keys up to 64 characters, values up to 512."""
    if metadata is None:
        return
    if not isinstance(metadata, dict) or len(metadata) > 16 or not all(
            isinstance(k, str) and isinstance(v, str) and len(k) <= 64 and len(v) <= 512
            for k, v in metadata.items()):
        raise ApiError(400, "metadata must be an object of up to 16 string pairs (keys up to "
                            "64 characters, values up to 512)", code="invalid_request",
                       param="metadata")


def _file(state, file_id: str, param: str | None = None):
    found = state.store.file(file_id) if FILE_ID.fullmatch(file_id) else None
    if found is None:
        raise ApiError(404, f"no file {file_id!r}", code="file_not_found", param=param)
    return found


def _shown(state, batch_id: str) -> dict[str, Any]:
    record = state.batches.record(batch_id)
    if record is None:
        raise ApiError(404, f"no batch {batch_id!r}", code="batch_not_found")
    running = state.batches.progress.get(batch_id)
    return {**record, "hpc_chat": running.summary() if running else None}


def _limit(limit: int, most: int) -> int:
    if not 1 <= limit <= most:
        raise ApiError(400, f"limit must be 1 to {most}", code="invalid_request", param="limit")
    return limit


def _page(data: list[dict[str, Any]], more: bool) -> dict[str, Any]:
    return {"object": "list", "data": data, "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None, "has_more": more}
