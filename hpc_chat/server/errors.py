"""The server's one error type, in OpenAI's shape: ``{"error": {"message", "type", "param",
"code"}}`` with its HTTP status; and the refusals every request that runs on the workers may
get before it starts (:func:`admit`)."""

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
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)

    def body(self) -> dict:
        """``{"error": {...}}``: the response's body, or a stream's error event."""
        return error_body(str(self), self.kind, self.code, self.param)


def error_body(message: str, kind: str, code: str, param: str | None = None) -> dict:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


async def admit(state) -> None:
    """Refuse a request that cannot start now: no model loaded yet (503) or the queue at its
    bound (429), each with ``Retry-After``."""
    if not state.ready:
        status = await state.status()
        raise ApiError(503, f"no worker has its model loaded yet ({status['state']}); wait "
                            f"for GET /health to answer 200", code="model_not_ready",
                       kind="server_error", headers={"Retry-After": "5"})
    if state.in_flight >= state.max_queue:
        raise ApiError(429, f"{state.in_flight} requests are being answered (the bound is "
                            f"{state.max_queue}); retry later", code="queue_full",
                       kind="rate_limit_error", headers={"Retry-After": "2"})
