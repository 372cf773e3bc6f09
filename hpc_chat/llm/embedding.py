"""Embeddings from a loaded model: many inputs in one ``llama_decode``, in a context of their own.

An :class:`Embedder` is a third llama.cpp context on the model a :class:`ChatEngine` already
holds (the weights are shared, not loaded again), made with ``embeddings`` on and a pooling
type, so embedding never touches the KV cache or the slots of the batched context that decodes
answers on the same node. Inputs are packed into one batch, one sequence each, up to
``max_seqs`` sequences and ``n_ctx`` tokens a decode; each sequence's pooled vector is read with
``llama_get_embeddings_seq`` and scaled to unit length, as OpenAI's are.

Pooling: an embedding GGUF declares its own (``cls`` for BERT-style models, ``mean``, ``last``);
a generative model declares none and is pooled by the mean of its token states, as
``llama-server --embedding --pooling mean`` does. An agent's ``pooling`` setting overrides both.
"""

from __future__ import annotations

import math
import threading
import time
from typing import Any

from hpc_chat.llm.engine import ChatEngine
from hpc_chat.protocol.embedding import Embeddings, Pooling, input_too_long

MAX_SEQS = 32  # sequences in one decode
MAX_INPUT_TOKENS = 8192  # tokens of one input, at most


class Embedder:
    """One embedding context on an engine's model; one ``embed`` at a time."""

    def __init__(self, engine: ChatEngine, pooling: Pooling | None = None,
                 max_seqs: int = MAX_SEQS):
        import llama_cpp

        self.lc = llama_cpp
        self.engine = engine
        self.model = engine.llama._model.model
        # The longest input: the context's, within the positions the model was trained on (a
        # BERT-style model has 512), and a bound on the compute buffer of a whole-input batch.
        self.n_ctx = min(engine.spec.n_ctx, MAX_INPUT_TOKENS,
                         llama_cpp.llama_model_n_ctx_train(self.model) or engine.spec.n_ctx)
        self.max_seqs = max_seqs
        self.n_embd = llama_cpp.llama_model_n_embd(self.model)
        self.lock = threading.Lock()
        self.ctx = self._context(pooling)
        try:
            kind = llama_cpp.llama_pooling_type(self.ctx)
            if kind == llama_cpp.LLAMA_POOLING_TYPE_NONE:  # a generative model: mean pooling
                llama_cpp.llama_free(self.ctx)
                self.ctx = None
                self.ctx = self._context(Pooling.MEAN)
                kind = llama_cpp.llama_pooling_type(self.ctx)
            self.pooling = Pooling.of_llama(kind)  # rank pooling (a reranker): refused
        except BaseException:
            self.close()
            raise
        self.memory = llama_cpp.llama_get_memory(self.ctx)

    def _context(self, pooling: Pooling | None):
        lc = self.lc
        params = lc.llama_context_params.from_buffer_copy(self.engine.llama.context_params)
        params.embeddings = True
        params.pooling_type = pooling.llama if pooling is not None else \
            lc.LLAMA_POOLING_TYPE_UNSPECIFIED
        params.n_ctx = self.n_ctx
        # A whole input in one micro-batch: its vector is pooled over one pass.
        params.n_batch = params.n_ubatch = self.n_ctx
        params.n_seq_max = self.max_seqs
        params.kv_unified = True  # the inputs of a decode share the cells: n_ctx in all
        ctx = lc.llama_init_from_model(self.model, params)
        if not ctx:
            raise RuntimeError("llama.cpp could not create an embedding context")
        return ctx

    def close(self) -> None:
        if self.ctx:
            self.lc.llama_free(self.ctx)
            self.ctx = None

    def tokens(self, inputs: list[str | list[int]]) -> list[list[int]]:
        """Each input's tokens (token arrays as given), refusing any that does not fit."""
        out = []
        n_vocab = self.lc.llama_vocab_n_tokens(self.lc.llama_model_get_vocab(self.model))
        for i, item in enumerate(inputs):
            if isinstance(item, str):
                toks = self.engine.llama.tokenize(item.encode("utf-8"), add_bos=True,
                                                  special=False)
            else:
                toks = list(item)
                bad = next((t for t in toks if not 0 <= t < n_vocab), None)
                if bad is not None:
                    raise ValueError(f"input[{i}]: the token {bad} is not in the model's "
                                     f"vocabulary (0 to {n_vocab - 1})")
            if not toks:
                raise ValueError(f"input[{i}] is empty")
            if len(toks) > self.n_ctx:
                    raise input_too_long(i, len(toks), self.n_ctx)
            out.append(toks)
        return out

    def embed(self, inputs: list[str | list[int]]) -> Embeddings:
        """Unit-length vectors for ``inputs``, in their order, and each one's token count."""
        start = time.perf_counter()
        toks = self.tokens(inputs)
        vectors: list[list[float]] = [[] for _ in toks]
        with self.lock:
            group: list[int] = []
            used = 0
            for i, t in enumerate(toks):
                if group and (len(group) == self.max_seqs or used + len(t) > self.n_ctx):
                    self._decode(toks, group, vectors)
                    group, used = [], 0
                group.append(i)
                used += len(t)
            self._decode(toks, group, vectors)
        return Embeddings(vectors=vectors, tokens=[len(t) for t in toks],
                          dimensions=self.n_embd, pooling=self.pooling,
                          seconds=time.perf_counter() - start)

    def _decode(self, toks: list[list[int]], group: list[int],
                vectors: list[list[float]]) -> None:
        lc = self.lc
        total = sum(len(toks[i]) for i in group)
        batch = lc.llama_batch_init(total, 0, 1)
        try:
            n = 0
            for seq, i in enumerate(group):
                for pos, tok in enumerate(toks[i]):
                    batch.token[n] = tok
                    batch.pos[n] = pos
                    batch.n_seq_id[n] = 1
                    batch.seq_id[n][0] = seq
                    batch.logits[n] = True
                    n += 1
            batch.n_tokens = n
            lc.llama_memory_clear(self.memory, True)
            rc = lc.llama_decode(self.ctx, batch)
            if rc != 0:
                raise RuntimeError(f"llama_decode failed with code {rc} (embeddings)")
            for seq, i in enumerate(group):
                ptr = lc.llama_get_embeddings_seq(self.ctx, seq)
                if not ptr:
                    raise RuntimeError("llama.cpp returned no pooled embedding")
                vectors[i] = unit(ptr[:self.n_embd])
        finally:
            lc.llama_batch_free(batch)


def unit(vector: list[float]) -> list[float]:
    """``vector`` scaled to length 1 (OpenAI's embeddings are; cosine is then a dot product)."""
    norm = math.sqrt(sum(x * x for x in vector))
    return [x / norm for x in vector] if norm > 0 else list(vector)


def describe(embedder: Embedder) -> dict[str, Any]:
    return {"dimensions": embedder.n_embd, "pooling": embedder.pooling.value}
