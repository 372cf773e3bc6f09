"""Embedding requests as OpenAI's clients send them, and the echo model's vectors (no model)."""

from __future__ import annotations

import base64
import math
import struct

import pytest

from hpc_chat.driver.embeddings import _renumbered
from hpc_chat.errors import PromptTooLongError
from hpc_chat.llm.echo import ECHO_DIMENSIONS, EchoEmbedder, EchoEngine
from hpc_chat.llm.models import ModelSpec
from hpc_chat.openai.embeddings import (
    EmbeddingRequestError,
    embedding_list,
    parse_embedding_request,
)


@pytest.mark.parametrize("given, inputs", [
    ("one text", ["one text"]),
    (["a", "b"], ["a", "b"]),
    ([1, 2, 3], [[1, 2, 3]]),  # one token array
    ([[1, 2], [3]], [[1, 2], [3]]),
])
def test_every_form_of_input_openai_takes(given, inputs):
    req = parse_embedding_request({"model": "m", "input": given, "user": "u1"})
    assert req.inputs == inputs and req.encoding == "float"


@pytest.mark.parametrize("body, param, words", [
    ({"model": "m", "input": "x", "dimensions": 8}, "dimensions", "not supported"),
    ({"model": "m", "input": "x", "encoding_format": "int8"}, "encoding_format", "base64"),
    ({"model": "m", "input": []}, "input", "must be a string"),
    ({"model": "m", "input": ["ok", ""]}, "input", "input[1]"),
    ({"model": "m", "input": [[1, -2]]}, "input", "input[0]"),
    ({"model": "m", "input": ["x"] * 2049}, "input", "at most 2048"),
    ({"input": "x"}, "model", "model must name"),
    ({"model": "m", "input": "x", "truncate": True}, "truncate", "not a parameter"),
])
def test_a_request_that_cannot_be_embedded_names_its_key(body, param, words):
    with pytest.raises(EmbeddingRequestError) as err:
        parse_embedding_request(body)
    assert err.value.param == param and words in str(err.value)


def test_base64_is_little_endian_float32_of_the_same_vector():
    vector = [0.5, -0.25, 0.125]
    body = embedding_list("m", [vector], 3, "base64")
    raw = base64.b64decode(body["data"][0]["embedding"])
    assert list(struct.unpack("<3f", raw)) == vector
    assert body["usage"] == {"prompt_tokens": 3, "total_tokens": 3}
    assert embedding_list("m", [vector], 3)["data"][0] == {"object": "embedding", "index": 0,
                                                          "embedding": vector}


def test_the_echo_model_gives_unit_vectors_the_same_for_the_same_text():
    embedder = EchoEmbedder(EchoEngine(ModelSpec(path="echo", n_ctx=128)))
    out = embedder.embed(["the cat sat", "the cat sat", "quarks and gluons", [5, 6, 7]])
    assert out.dimensions == ECHO_DIMENSIONS and out.tokens == [3, 3, 3, 3]
    assert all(math.isclose(sum(x * x for x in v), 1.0) for v in out.vectors)
    assert out.vectors[0] == out.vectors[1] and out.vectors[0] != out.vectors[2]
    with pytest.raises(PromptTooLongError, match=r"input\[1\] has 200 tokens"):
        embedder.embed(["fine", "w " * 200])


def test_a_slice_error_names_the_input_by_its_place_in_the_whole_request():
    assert str(_renumbered(ValueError("input[3] is empty"), 128)) == "input[131] is empty"
    assert str(_renumbered(PromptTooLongError("input[0] has 9 tokens"), 64)) == \
        "input[64] has 9 tokens"
    assert isinstance(_renumbered(PromptTooLongError("input[0] x"), 64), PromptTooLongError)
    assert str(_renumbered(RuntimeError("engine lost"), 64)) == "engine lost"


def test_an_embeddings_line_of_an_openai_batch_file():
    from hpc_chat.openai.batch import parse_request
    from hpc_chat.openai.embeddings import EmbeddingLine
    from hpc_chat.openai.params import RequestError

    req = parse_request({"custom_id": "e1", "method": "POST", "url": "/v1/embeddings",
                         "body": {"model": "balanced_agent", "input": ["a", "b"]}})
    assert isinstance(req, EmbeddingLine) and req.inputs == ["a", "b"]
    assert req.agents == ["balanced_agent"] and req.fingerprint.startswith("sha256:")
    with pytest.raises(RequestError) as err:
        parse_request({"custom_id": "e2", "url": "/v1/embeddings",
                       "body": {"model": "m", "input": [""]}})
    assert err.value.param == "body.input" and err.value.status == 400
