"""Embeddings with the real embedded model: in the engine's own embedding context, and
through ``hpc-chat serve`` with the openai SDK on Parsl workers and the node engine."""

from __future__ import annotations

import base64
import struct
import threading

import numpy as np
import openai
import pytest

from hpc_chat.errors import PromptTooLongError
from hpc_chat.llm.embedding import MAX_SEQS
from hpc_chat.llm.models import ModelSpec, resolve_model
from hpc_chat.llm.registry import get_embedder, get_engine

pytestmark = pytest.mark.model

def cosine(a, b) -> float:
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


# A vector depends a little on what else shares its decode: llama.cpp's CPU kernels take
# another path for a micro-batch of many tokens than for a few (as with llama-server and vLLM).
# Within one decode the same text gives the same vector; across decodes, cosine >= SAME.
SAME = 0.999

TEXTS = ["The cat sat on the mat.", "Gluons bind quarks inside protons.",
         "A dog lay on the rug.", "MPI ranks exchange halos every step."]


@pytest.fixture(scope="module")
def embedder():
    engine = get_engine(ModelSpec(path=str(resolve_model("default")), n_threads=2))[0]
    return get_embedder(engine)


def test_unit_vectors_the_same_text_the_same_vector_others_differ(embedder):
    out = embedder.embed([TEXTS[0], TEXTS[1], TEXTS[0]])
    v = np.array(out.vectors)
    assert out.pooling.value == "mean" and v.shape == (3, out.dimensions)  # generative: mean
    assert np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-6)
    assert np.allclose(v[0], v[2], atol=1e-6)  # twice in one decode
    assert np.allclose(v[0], embedder.embed([TEXTS[0]]).vectors[0], atol=1e-6)  # alone
    assert not np.allclose(v[0], v[1], atol=1e-2)
    tokens = embedder.tokens([TEXTS[0]])[0]
    assert out.tokens[0] == len(tokens)
    assert np.allclose(embedder.embed([tokens]).vectors[0], v[0], atol=1e-6)  # token array


def test_more_inputs_than_one_decode_holds_come_back_in_order(embedder):
    texts = [f"{TEXTS[i % 4]} (number {i})" for i in range(MAX_SEQS + 9)]
    together = np.array(embedder.embed(texts).vectors)
    alone = [embedder.embed([texts[i]]).vectors[0] for i in range(len(texts))]
    for i, vector in enumerate(alone):
        assert cosine(together[i], vector) >= SAME, i
        others = [cosine(together[i], v) for j, v in enumerate(alone) if j != i]
        assert cosine(together[i], vector) > max(others), i  # its own vector, not another's


def test_an_input_longer_than_the_context_is_refused_naming_it(embedder):
    with pytest.raises(PromptTooLongError, match=r"input\[1\] has \d+ tokens"):
        embedder.embed(["short", "word " * (embedder.n_ctx + 10)])
    with pytest.raises(ValueError, match=r"input\[0\]: the token 99999999"):
        embedder.embed([[1, 99999999]])


# ----------------------------------------------------------------------------- through serve

@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from tests.helpers.server import real_model_server

    yield from real_model_server(tmp_path_factory)


@pytest.mark.parsl
def test_the_sdk_embeds_through_the_node_engine(server):
    client = server.client()
    got = client.embeddings.create(model="balanced_agent", input=TEXTS)  # base64, decoded
    floats = client.embeddings.create(model="balanced_agent", input=TEXTS,
                                      encoding_format="float")
    a = np.array([d.embedding for d in got.data])
    b = np.array([d.embedding for d in floats.data])
    assert [d.index for d in got.data] == [0, 1, 2, 3] and a.shape[1] == 576
    assert np.allclose(a, b, atol=1e-6)
    assert got.usage.prompt_tokens == floats.usage.prompt_tokens > len(TEXTS)
    extra = floats.model_extra["hpc_chat"]
    assert extra["pooling"] == "mean" and extra["model_path"].endswith(".gguf")
    assert len(extra["engines"]) == 1  # the node's engine, not the workers
    models = {m["id"]: m["hpc_chat"]["capabilities"] for m in server.get("/v1/models")[1]["data"]}
    assert models["balanced_agent"] == ["chat", "completions", "embeddings"]
    assert models["auto"] == ["chat"]


@pytest.mark.parsl
def test_refusals_name_the_input_and_the_model(server):
    client = server.client()
    with pytest.raises(openai.BadRequestError) as err:
        client.embeddings.create(model="balanced_agent", input=["fine", "word " * 3000])
    assert err.value.body["code"] == "context_length_exceeded"
    assert err.value.body["param"] == "input" and "input[1]" in err.value.body["message"]
    with pytest.raises(openai.BadRequestError) as err:
        client.embeddings.create(model="balanced_agent", input="x", dimensions=64)
    assert err.value.body["param"] == "dimensions"
    with pytest.raises(openai.NotFoundError):
        client.embeddings.create(model="auto", input="x")


@pytest.mark.parsl
def test_a_long_list_spreads_in_order_and_answers_are_not_disturbed(server):
    """150 inputs (three tasks) embedded while a chat answer is decoded on the same node:
    the vectors come back in order, and the answer is the one given without them."""
    client = server.client()

    def ask():
        return client.chat.completions.create(
            model="balanced_agent", temperature=0, seed=3, max_tokens=48,
            messages=[{"role": "user", "content": "Name three colours."}]
        ).choices[0].message.content

    before = ask()
    texts = [f"text number {i}" for i in range(150)]
    got = {}
    worker = threading.Thread(target=lambda: got.update(
        out=client.embeddings.create(model="balanced_agent", input=texts,
                                     encoding_format="float")))
    worker.start()
    during = ask()
    worker.join(120)
    assert during == before
    out = got["out"]
    assert [d.index for d in out.data] == list(range(150))
    one = client.embeddings.create(model="balanced_agent", input=texts[137],
                                   encoding_format="float").data[0].embedding
    assert cosine(out.data[137].embedding, one) >= SAME
    assert cosine(out.data[136].embedding, one) < cosine(out.data[137].embedding, one)


def test_base64_as_the_sdk_decodes_it():
    raw = base64.b64encode(struct.pack("<2f", 1.5, -2.0)).decode()
    assert np.frombuffer(base64.b64decode(raw), dtype="<f4").tolist() == [1.5, -2.0]


@pytest.mark.parsl
def test_embedding_lines_of_a_batch_file_through_the_server(server, tmp_path):
    import json

    from tests.helpers.cli import hpc

    batch = tmp_path / "lines.jsonl"
    batch.write_text("".join(json.dumps({"custom_id": cid, "method": "POST",
                                         "url": "/v1/embeddings", "body": body}) + "\n"
                             for cid, body in [
                                 ("e1", {"model": "balanced_agent", "input": TEXTS[:2]}),
                                 ("e2", {"model": "auto", "input": "x"})]))
    out = tmp_path / "out.jsonl"
    done = hpc(server.home, "batch", str(batch), "-o", str(out), "--server", server.url,
               config=None, model=None, timeout=300)
    assert done.returncode == 1, done.stderr  # e2: 'auto' does not embed
    assert "answering through the server" in done.stderr
    body = json.loads(out.read_text())["response"]["body"]
    assert [d["index"] for d in body["data"]] == [0, 1] and len(body["data"][0]["embedding"]) == 576
    error = json.loads((tmp_path / "out.errors.jsonl").read_text())["response"]
    assert error["status_code"] == 404 and error["body"]["error"]["code"] == "model_not_found"
