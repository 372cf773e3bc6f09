"""OpenAI's embeddings request and response: ``POST /v1/embeddings`` and batch lines whose
``url`` is ``/v1/embeddings`` (:class:`EmbeddingLine`, read by :mod:`hpc_chat.openai.batch`).

``input`` is a string, a list of strings, a list of token ids, or a list of such lists (at most
2048 inputs, none empty). ``encoding_format`` is ``float`` or ``base64`` (little-endian float32,
as OpenAI's SDK decodes it). ``dimensions`` is refused: no model served here is trained to be
cut short (Matryoshka), and cutting another model's vectors changes what they mean. ``user``
is accepted and unused.
"""

from __future__ import annotations

import base64
import struct
from dataclasses import dataclass, field
from typing import Any

from hpc_chat.protocol.embedding import MAX_INPUTS

EMBEDDINGS_URL = "/v1/embeddings"
KEYS = {"model", "input", "encoding_format", "dimensions", "user"}


class EmbeddingRequestError(ValueError):
    """A request that cannot be embedded as given; ``param`` names the key at fault."""

    def __init__(self, message: str, param: str | None = None,
                 code: str = "invalid_request"):
        super().__init__(message)
        self.param, self.code = param, code


@dataclass
class EmbeddingRequest:
    model: str
    inputs: list[str | list[int]]
    encoding: str  # float or base64


def parse_embedding_request(body: Any) -> EmbeddingRequest:
    """Check one request body; raises :class:`EmbeddingRequestError` naming the key."""
    if not isinstance(body, dict):
        raise EmbeddingRequestError("the body must be a JSON object")
    unknown = sorted(set(body) - KEYS)
    if unknown:
        raise EmbeddingRequestError(f"{unknown[0]} is not a parameter of /v1/embeddings (it "
                                    f"takes {', '.join(sorted(KEYS))})", param=unknown[0],
                                    code="unsupported_parameter")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise EmbeddingRequestError("model must name an agent whose model embeds (GET "
                                    "/v1/models lists them)", param="model")
    encoding = body.get("encoding_format") or "float"
    if encoding not in ("float", "base64"):
        raise EmbeddingRequestError("encoding_format must be float or base64",
                                    param="encoding_format")
    if body.get("dimensions") is not None:
        raise EmbeddingRequestError(
            "dimensions is not supported: the models served here give vectors of their own "
            "size only (cutting them short changes what they mean); leave it out",
            param="dimensions", code="unsupported_parameter")
    return EmbeddingRequest(model, _inputs(body.get("input")), encoding)


def _inputs(value: Any) -> list[str | list[int]]:
    if isinstance(value, str):
        value = [value]
    elif isinstance(value, list) and value and all(_is_token(t) for t in value):
        value = [value]  # one token array
    if not isinstance(value, list) or not value:
        raise EmbeddingRequestError("input must be a string, a list of strings, a list of "
                                    "token ids, or a list of token id lists", param="input")
    if len(value) > MAX_INPUTS:
        raise EmbeddingRequestError(f"input: at most {MAX_INPUTS} inputs in one request, "
                                    f"not {len(value)}", param="input")
    for i, item in enumerate(value):
        ok = isinstance(item, str) and item != "" or \
            isinstance(item, list) and item and all(_is_token(t) for t in item)
        if not ok:
            raise EmbeddingRequestError(f"input[{i}] must be a non-empty string or a "
                                        f"non-empty list of token ids", param="input")
    return value


def _is_token(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def encoded(vector: list[float], encoding: str) -> list[float] | str:
    if encoding == "base64":
        return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")
    return vector


def embedding_list(model: str, vectors: list[list[float]], prompt_tokens: int,
                   encoding: str = "float", extra: dict[str, Any] | None = None
                   ) -> dict[str, Any]:
    """OpenAI's response: one ``embedding`` object per input, in order, and the usage."""
    body = {"object": "list", "model": model,
            "data": [{"object": "embedding", "index": i, "embedding": encoded(v, encoding)}
                     for i, v in enumerate(vectors)],
            "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens}}
    if extra:
        body["hpc_chat"] = extra
    return body


@dataclass
class EmbeddingLine:
    """One ``/v1/embeddings`` line of an OpenAI batch file, checked."""

    custom_id: str
    model: str
    inputs: list[str | list[int]]
    encoding: str
    fingerprint: str
    ignored: list[str] = field(default_factory=list)

    @property
    def agents(self) -> list[str]:
        return [self.model]

    @property
    def prompt(self) -> str:
        """What a native output line shows as its prompt: the first input's text."""
        first = self.inputs[0]
        return first if isinstance(first, str) else f"<{len(first)} tokens>"


def embedding_line(custom_id: str, body: Any, fingerprint: str) -> EmbeddingLine:
    """A batch line's body as an :class:`EmbeddingLine`; its faults name ``body.KEY``."""
    try:
        req = parse_embedding_request(body)
    except EmbeddingRequestError as exc:
        raise EmbeddingRequestError(str(exc), param=f"body.{exc.param}" if exc.param
                                    else "body", code=exc.code) from None
    return EmbeddingLine(custom_id, req.model, req.inputs, req.encoding, fingerprint)
