"""``POST /v1/files``: a multipart upload streamed to disk, never held in memory.

The body is parsed as it arrives (python-multipart's streaming parser, the one Starlette uses)
and the ``file`` part written straight to a new 0600 file in the store, so a file of several
gigabytes costs the server a buffer, not its size. The upload's own limit (``hpc-chat serve
--max-upload-mb``) replaces the request body limit of the other routes; past it the partial
file is removed and the error names the limit and the option. Form fields other than the file
are small (a few hundred bytes at most).
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass, field
from pathlib import Path

from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import Request

from hpc_chat.server.errors import ApiError

MAX_FIELD = 1024  # bytes of a form field other than the file
MAX_PARTS = 8


def too_large(limit: int) -> str:
    return (f"the file is over the server's upload limit of {limit >> 20} MiB (hpc-chat serve "
            f"--max-upload-mb); split it into several batches")


@dataclass
class Upload:
    """What an upload's form held: its fields, the file's name and size."""

    fields: dict[str, str] = field(default_factory=dict)
    filename: str | None = None
    size: int = 0


class _Parts:
    """The parser's callbacks: each part's headers, the file part's bytes to ``fd``."""

    def __init__(self, fd: int, limit: int):
        self.fd, self.limit, self.upload = fd, limit, Upload()
        self._header, self._value = b"", b""
        self._disposition = b""
        self._name, self._is_file, self._data = "", False, b""
        self.parts = 0

    def callbacks(self) -> dict:
        return {"on_part_begin": self.begin, "on_header_field": self.header_field,
                "on_header_value": self.header_value, "on_header_end": self.header_end,
                "on_headers_finished": self.headers_done, "on_part_data": self.data,
                "on_part_end": self.end}

    def begin(self) -> None:
        self._disposition, self._data = b"", b""
        self.parts += 1
        if self.parts > MAX_PARTS:
            raise ApiError(400, f"an upload has at most {MAX_PARTS} parts ('file', 'purpose')",
                           code="invalid_request")

    def header_field(self, data: bytes, start: int, end: int) -> None:
        self._header += data[start:end]

    def header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def header_end(self) -> None:
        if self._header.lower() == b"content-disposition":
            self._disposition = self._value
        self._header, self._value = b"", b""

    def headers_done(self) -> None:
        _, params = parse_options_header(self._disposition)
        self._name = params.get(b"name", b"").decode("utf-8", "replace")
        self._is_file = self._name == "file"
        if self._is_file:
            if self.upload.filename is not None:
                raise ApiError(400, "send one file per upload", code="invalid_request",
                               param="file")
            self.upload.filename = params.get(b"filename", b"upload.jsonl").decode(
                "utf-8", "replace")[:255]

    def data(self, data: bytes, start: int, end: int) -> None:
        if not self._is_file:
            self._data += data[start:end]
            if len(self._data) > MAX_FIELD:
                raise ApiError(400, f"the form field {self._name!r} is over {MAX_FIELD} bytes",
                               code="invalid_request", param=self._name)
            return
        self.upload.size += end - start
        if self.upload.size > self.limit:
            raise ApiError(413, too_large(self.limit), code="file_too_large", param="file")
        view = memoryview(data)[start:end]
        while view:
            view = view[os.write(self.fd, view):]

    def end(self) -> None:
        if not self._is_file:
            self.upload.fields[self._name] = self._data.decode("utf-8", "replace")


async def receive(request: Request, dest: Path, limit: int) -> Upload:
    """Parse the multipart body of ``request``, its ``file`` part written to ``dest`` (a new
    0600 file, removed again when the upload fails)."""
    size = request.headers.get("content-length")
    if size is not None and size.isdigit() and int(size) > limit + (64 << 10):
        raise ApiError(413, too_large(limit), code="file_too_large", param="file")
    kind, params = parse_options_header(request.headers.get("content-type"))
    boundary = params.get(b"boundary")
    if kind != b"multipart/form-data" or not boundary:
        raise ApiError(400, "upload a file as multipart/form-data with the fields 'file' and "
                            "'purpose'", code="invalid_request")
    fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                 0o600)
    parts = _Parts(fd, limit)
    try:
        parser = MultipartParser(boundary, parts.callbacks())
        async for chunk in request.stream():
            parser.write(chunk)
        parser.finalize()
    except (ApiError, asyncio.CancelledError):
        dest.unlink(missing_ok=True)  # (cancelled: the server is stopping)
        raise
    except Exception as exc:  # noqa: BLE001 - a malformed body, in the parser's words
        dest.unlink(missing_ok=True)
        raise ApiError(400, f"the upload is not a well-formed multipart body: {exc}",
                       code="invalid_request") from None
    finally:
        os.close(fd)
    if parts.upload.filename is None:
        dest.unlink(missing_ok=True)
        raise ApiError(400, "the upload has no 'file' part", code="invalid_request",
                       param="file")
    return parts.upload
