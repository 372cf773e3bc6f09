"""The server's one error type, in OpenAI's shape: ``{"error": {"message", "type", "param",
"code"}}`` with its HTTP status."""

from __future__ import annotations

from fastapi.responses import JSONResponse


class ApiError(Exception):
    def __init__(self, status: int, message: str, *, code: str, param: str | None = None,
                 kind: str = "invalid_request_error", headers: dict | None = None):
        super().__init__(message)
        self.status, self.code, self.param, self.kind = status, code, param, kind
        self.headers = headers or {}

    def response(self, metrics=None) -> JSONResponse:
        """The OpenAI error body; a refusal (a 4xx) is counted in ``metrics`` when given."""
        if metrics is not None and self.status < 500:
            metrics.refused.labels(str(self.status)).inc()
        return JSONResponse(error_body(str(self), self.kind, self.code, self.param),
                            status_code=self.status, headers=self.headers)


def error_body(message: str, kind: str, code: str, param: str | None = None) -> dict:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}
