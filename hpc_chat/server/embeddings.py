"""``POST /v1/embeddings``: OpenAI's embeddings, made by an agent's model on the workers.

The body is checked by :mod:`hpc_chat.openai.embeddings`; the inputs are embedded by the
workflow's workers (:mod:`hpc_chat.driver.embeddings`: sliced over every worker, each slice in
one decode of a node engine's embedding context). The answer is OpenAI's list of embeddings,
plus an ``hpc_chat`` field saying which model file, pooling and engines made them.
"""

from __future__ import annotations

import time
from typing import Any

from hpc_chat.driver.embeddings import embed
from hpc_chat.openai.batch import ROUTED_MODEL
from hpc_chat.openai.embeddings import (
    EmbeddingRequestError,
    embedding_list,
    parse_embedding_request,
)
from hpc_chat.protocol.failure import FailureCode, failure_code
from hpc_chat.server.errors import ApiError, admit


async def embeddings(state, body: dict[str, Any]) -> dict[str, Any]:
    wf = state.workflow
    try:
        req = parse_embedding_request(body)
    except EmbeddingRequestError as exc:
        raise ApiError(400, str(exc), code=exc.code, param=exc.param) from None
    if req.model not in wf.agents:
        why = "'auto' answers with several agents and embeds nothing; " \
            if req.model == ROUTED_MODEL else ""
        raise ApiError(404, f"the model {req.model!r} does not embed here; {why}the models "
                            f"that do: {', '.join(sorted(wf.agents))}",
                       code="model_not_found", param="model")
    await admit(state)
    start = time.perf_counter()
    state.begin()
    outcome: dict[str, Any] | None = None
    try:
        result = await embed(wf, req.model, req.inputs)
        outcome = {"ok": True, "prompt_tokens": result.prompt_tokens, "completion_tokens": 0}
    except Exception as exc:  # noqa: BLE001 - every failure gets OpenAI's error shape
        code = failure_code(exc)
        if code.kind == "input":
            raise ApiError(code.status, str(exc), code=code.value, param="input") from None
        raise ApiError(500, f"embedding failed: {exc}", kind="server_error",
                       code=FailureCode.GENERATION_FAILED.value) from None
    finally:
        state.end("ok" if outcome else "error", outcome, time.perf_counter() - start)
    return embedding_list(req.model, result.vectors, result.prompt_tokens, req.encoding,
                          extra={"model": result.model, "dimensions": result.dimensions,
                                 "pooling": result.pooling,
                                 "model_path": result.tasks[0]["model_path"],
                                 "engines": sorted({t["engine"]["pid"] for t in result.tasks
                                                    if t.get("engine")})})
