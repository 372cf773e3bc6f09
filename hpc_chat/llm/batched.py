"""Batched decoding: several chat requests decoded together in one llama.cpp context.

llama-cpp-python's high-level ``Llama`` decodes one sequence at a time, so a worker's cores
spend every step on a single token. Here each ``llama_decode`` call carries the next token of
every active request (and the prompts of newly admitted ones), each in its own sequence of the
KV cache, and each request samples from its own row of logits with its own sampler chain.
Requests join as soon as a sequence is free and leave when they finish (continuous batching),
so the batch stays full until the queue runs dry; it holds as many of the context's sequences
as pay for themselves (:mod:`hpc_chat.llm.slots`). A request whose answer has a format
(``response_format``, ``grammar``) carries llama.cpp's grammar sampler in its own chain
(:mod:`hpc_chat.llm.grammar`), so constrained and free requests, and requests with different
schemas, share one batch.

A prompt is evaluated in chunks cut where its messages start (:mod:`hpc_chat.llm.chunks`),
all but the last kept in *holder* sequences (:mod:`hpc_chat.llm.prefix_cache`) and copied into
each new request's sequence (``llama_memory_seq_cp``): an agent's system prompt is evaluated
once, and a conversation's next turn starts from the cache its previous answer left.

When a request ends below the highest running sequence, the highest one moves into its place
(cache copied, sampler following): llama.cpp puts sequences in one micro-batch only while their
ids ascend by one, so a gap costs another pass over the weights at every step of the tail.

The answers are the unbatched answers, token for token (tests/integration/test_batched.py):
the model's own chat template (llama-cpp-python's ``Jinja2ChatFormatter``), the same prompt
chunks as :class:`~hpc_chat.llm.engine.ChatEngine`, the same sampler chain and stop rules, and
the same numbers: each step is one micro-batch in sequence order, and flash attention adds up
each sequence's own cache cells in the same order alone or batched. (Not always: a final
message of 64 tokens or more, and a sequence past 256 cells decoded beside others, take
another flash-attention path than alone, so a near-tie may flip there.)
"""

from __future__ import annotations

import bisect
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from functools import partial

import numpy as np

from hpc_chat.errors import FormatError, PromptTooLongError
from hpc_chat.llm import logprobs, sampling
from hpc_chat.llm.engine import ChatEngine
from hpc_chat.llm.feed import Feed, Job
from hpc_chat.llm.prefix_cache import MIN_HOLDERS, KVSequences, PrefixCache, holders_within
from hpc_chat.llm.profile import DecodeProfile, passes
from hpc_chat.llm.slots import SlotCap
from hpc_chat.protocol.request import Completion, GenRequest, prompt_too_long


@dataclass
class _Seq:
    job: Job
    req: GenRequest
    prompt: list[int]
    stop: list[str]
    sampler: object
    admitted: float
    pos: int = 0
    shared: int = 0  # prompt tokens copied from a holder instead of evaluated in the batch
    cached: int = 0  # of those, the ones found in a holder (evaluated for an earlier prompt)
    ends: tuple[int, ...] = ()  # where the prompt's chunks end
    holder: int | None = None  # the holder its leading chunks were copied from
    out: list[int] = field(default_factory=list)
    text: bytes = b""
    logit_row: int = -1
    next_token: int | None = None
    logprobs: list[dict] = field(default_factory=list)  # one per drawn token, when asked


class BatchedEngine:
    """A second llama.cpp context on a loaded model, with ``n_seq`` sequences for requests and
    ``holders`` more for shared prompt chunks, or as many as ``prefix_cache_bytes`` of KV cache
    holds (the site's ``model.prefix_cache_mb``, given by the registry's
    :func:`~hpc_chat.llm.registry.get_batched_engine`)."""

    def __init__(self, engine: ChatEngine, n_seq: int = 8, holders: int = MIN_HOLDERS, *,
                 prefix_cache_bytes: int | None = None):
        import llama_cpp

        self.lc, self.engine, self.n_seq = llama_cpp, engine, n_seq
        llama = engine.llama
        self.model = llama._model.model
        self.vocab = llama_cpp.llama_model_get_vocab(self.model)
        self.n_ctx_seq = engine.spec.n_ctx
        if prefix_cache_bytes is not None:
            holders = holders_within(prefix_cache_bytes, self.stream_bytes(),
                                     llama_cpp.llama_max_parallel_sequences() - n_seq)
        self.n_holders = holders
        # Start from the unbatched context's own parameters (flash attention, KV types, RoPE,
        # ...), so both paths compute the same numbers; change only what batching needs.
        params = llama_cpp.llama_context_params.from_buffer_copy(llama.context_params)
        params.n_ctx = self.n_ctx_seq * (n_seq + holders)
        params.n_batch = max(engine.spec.n_batch, self.n_ctx_seq)
        params.n_ubatch = min(512, params.n_batch)
        params.n_seq_max = n_seq + holders
        params.n_threads = params.n_threads_batch = engine.n_threads
        # One KV stream per sequence: a request's cells sit where the unbatched context puts
        # them, so attention sums in the same order (a unified buffer without flash attention
        # changed 3 of 8 greedy answers). A copy (a holder's chunks, a kept answer) copies a
        # whole stream, 47 MB for 2048 cells: milliseconds, where evaluating takes hundreds.
        params.kv_unified = False
        self.n_batch = params.n_batch
        self.ctx = llama_cpp.llama_init_from_model(self.model, params)
        if not self.ctx:
            raise RuntimeError("llama.cpp could not create a batched context")
        self.memory = llama_cpp.llama_get_memory(self.ctx)
        if engine.template is None:
            raise RuntimeError("the model has no chat template; batched mode needs one")
        self.template_stops = engine.template.stops
        self.lock = threading.Lock()
        self.profile, self.slots = DecodeProfile(), SlotCap(n_seq)
        self.prefix = PrefixCache(n_seq, holders)
        self.seqs = KVSequences(llama_cpp, self.ctx, self.n_batch, self.profile)
        self.grammars = engine.grammars  # parsed once per model, shared with the engine
        self.pool: ThreadPoolExecutor | None = None  # drawing constrained tokens, when needed
        self._vocab_index: sampling.VocabIndex | None = None
        self._eog: np.ndarray | None = None  # end-of-generation tokens, once ignore_eos asks

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown()
            self.pool = None
        self.seqs.close()
        if self.ctx:
            self.lc.llama_free(self.ctx)
            self.ctx = None

    # ----------------------------------------------------------------- pieces
    def stream_bytes(self) -> int:
        """One sequence's KV cache in bytes (keys and values, 16 bits each, every layer)."""
        lc, model = self.lc, self.model
        per_head = lc.llama_model_n_embd(model) // max(1, lc.llama_model_n_head(model))
        kv_width = per_head * lc.llama_model_n_head_kv(model)
        return 2 * 2 * kv_width * lc.llama_model_n_layer(model) * self.n_ctx_seq

    @property
    def cap(self) -> int:
        """How many sequences it runs now, at most ``n_seq`` (:mod:`hpc_chat.llm.slots`)."""
        return self.slots.cap

    def _prompt(self, req: GenRequest) -> tuple[list[int], tuple[int, ...], list[str]]:
        """The prompt's tokens, where its chunks end (none for a text completion, or with no
        holders), and the stop strings (a text completion's: its own only)."""
        if req.prompt is not None:
            tokens, ends = self.engine.text_tokens(req.prompt), ()
        else:
            tokens, ends = self.engine.prompt_chunks(req.messages, req.tools, req.text_allowed)
        if len(tokens) + req.max_tokens > self.n_ctx_seq:
            raise prompt_too_long(len(tokens), req.max_tokens, self.n_ctx_seq)
        return tokens, ends if self.n_holders else (), list(req.stop) + (
            [] if req.prompt is not None else self.template_stops)

    def _sampler(self, req: GenRequest, seed: int):
        """The request's own sampler (:func:`~hpc_chat.llm.sampling.sampler_for`); the
        vocabulary index (and the end-of-generation tokens) are found once, by the first
        request with a format (with ``ignore_eos``)."""
        if req.output is not None and self._vocab_index is None:
            self._vocab_index = sampling.VocabIndex(self.lc, self.vocab,
                                                    self.lc.llama_vocab_n_tokens(self.vocab))
        if req.ignore_eos and self._eog is None:
            self._eog = sampling.eog_tokens(self.lc, self.vocab)
        return sampling.sampler_for(self.lc, self.vocab, req, seed, self.grammars,
                                    self._vocab_index, self._eog)

    def _piece(self, token: int) -> bytes:
        return sampling.token_piece(self.lc, self.vocab, token, special=False)

    # ----------------------------------------------------------------- the loop
    def generate(self, requests: list[GenRequest],
                 on_text: list | None = None) -> list[Completion | Exception]:
        """Answer every request; a request that cannot run gets its exception in its slot.
        ``on_text[i]`` (when given and not None) hears request i's text so far after each
        token; returning False stops that answer (``finish_reason: cancelled``)."""
        results: list[Completion | Exception | None] = [None] * len(requests)
        listeners = on_text or [None] * len(requests)
        feed = Feed([Job(req, partial(results.__setitem__, i), listeners[i])
                     for i, req in enumerate(requests)])
        feed.close()
        self.run(feed)
        return results  # type: ignore[return-value]

    def run(self, feed: Feed) -> None:
        """Decode the feed's jobs until it is closed and empty. A decode failure fails every
        job in flight and every waiting one, then raises (the context may be unusable)."""
        with self.lock:
            active: dict[int, _Seq] = {}
            waiting: deque[Job] = deque()  # taken from the feed, not admitted yet
            try:
                self._run(feed, active, waiting)
            except BaseException as exc:
                for job in [*(s.job for s in active.values()), *waiting]:
                    job.done(exc)
                feed.drain(exc)
                raise

    def _run(self, feed: Feed, active: dict[int, _Seq], waiting: deque[Job]) -> None:
        import random

        lc = self.lc
        free = list(range(self.n_seq))
        batch = lc.llama_batch_init(self.n_batch, 0, 1)
        started = time.perf_counter()
        try:
            while True:
                # New requests join at this step while slots are free; wait only when idle.
                room = self.slots.cap - len(active)  # the cap is at most n_seq: ids are free
                waiting.extend(feed.take(room - len(waiting), block=not active and not waiting))
                if not active and not waiting:
                    if feed.closed:
                        break
                    continue  # every job taken had been cancelled: wait for the next
                # What each sequence decodes this step: (token, position, wants logits).
                step_tokens: dict[int, list[tuple[int, int, bool]]] = {}
                for seq_id, s in active.items():  # one new token for each running request
                    step_tokens[seq_id] = [(s.next_token, s.pos, True)]
                    s.pos += 1
                generating = n = len(step_tokens)
                while waiting and len(active) < self.slots.cap:  # admit while prompts fit
                    job = waiting[0]
                    req = job.req
                    try:
                        tokens, ends, stops = self._prompt(req)
                    except PromptTooLongError as exc:
                        waiting.popleft()
                        job.done(exc)
                        continue
                    k = ends[-1] if ends else 0
                    if n + len(tokens) - k > self.n_batch:
                        break
                    waiting.popleft()
                    seed = req.seed if req.seed is not None else random.getrandbits(32)
                    try:
                        sampler = self._sampler(req, seed)
                    except FormatError as exc:  # a grammar llama.cpp cannot parse
                        job.done(exc)
                        continue
                    seq_id, holder = free.pop(0), None  # the lowest free id: ids stay contiguous
                    if k:  # the leading chunks: copy their cache instead of evaluating them
                        try:
                            holder, cached = self.prefix.holder_for(tokens, ends, self.seqs)
                        except BaseException as exc:
                            sampler.free()  # not active yet: nothing else would free it
                            job.done(exc)  # neither waiting nor active: fail it here
                            raise
                        self.seqs.copy(holder, seq_id)
                        self.seqs.cut(seq_id, k)  # a holder may hold a longer conversation
                    else:
                        self.seqs.cut(seq_id, -1)
                        cached = 0
                    active[seq_id] = _Seq(job, req, tokens, stops, sampler,
                                          time.perf_counter(), pos=len(tokens), shared=k,
                                          cached=cached, ends=ends, holder=holder)
                    step_tokens[seq_id] = [(tokens[i], i, i == len(tokens) - 1)
                                           for i in range(k, len(tokens))]
                    n += len(tokens) - k
                if n == 0:
                    continue  # every waiting prompt was refused: take the next ones
                self._close_gaps(active, step_tokens, free)
                # With one KV stream per sequence, llama.cpp puts sequences in one micro-batch
                # only while their ids ascend by one in batch order; in any other order each
                # sequence gets a forward pass of its own and batching gains nothing.
                n = 0
                for seq_id in sorted(step_tokens):
                    for token, pos, logits in step_tokens[seq_id]:
                        batch.token[n] = token
                        batch.pos[n] = pos
                        batch.n_seq_id[n] = 1
                        batch.seq_id[n][0] = seq_id
                        batch.logits[n] = logits
                        n += 1
                    active[seq_id].logit_row = n - 1
                batch.n_tokens = n
                step = time.perf_counter()
                rc = lc.llama_decode(self.ctx, batch)
                if rc != 0:
                    raise RuntimeError(f"llama_decode failed with code {rc}")
                lc.llama_synchronize(self.ctx)  # a GPU's decode ends here, not at the call
                decoded = time.perf_counter()
                self.profile.decoded(generating, n - generating, decoded - step,
                                     runs=passes(step_tokens))
                if n == generating:  # generated tokens alone: what a batch of that size costs
                    self.slots.observe(n, decoded - step, len(waiting) + feed.waiting())
                drawn = self._draw(active)
                for seq_id in list(active):
                    s = active[seq_id]
                    token = drawn[seq_id]
                    if s.req.logprobs is not None and not isinstance(token, FormatError):
                        s.logprobs.append(self._logprob(s, token))
                    if isinstance(token, FormatError):  # a dead end of its grammar
                        del active[seq_id]
                        self._retire(s)
                        bisect.insort(free, seq_id)
                        s.job.done(token)
                    elif self._finished(s, token):
                        del active[seq_id]
                        self._retire(s)
                        if s.ends and self.engine.answers_stepwise:  # kept for a next turn
                            done = s.out[:s.pos - len(s.prompt)]  # the answer tokens decoded
                            self.prefix.keep(seq_id, s.prompt, s.ends, done, self.seqs, s.holder)
                        bisect.insort(free, seq_id)
                        s.job.done(self._completion(s, started))
                    else:
                        s.next_token = token
                self.profile.sample_s += time.perf_counter() - decoded
        finally:
            for s in active.values():
                self._retire(s)
            lc.llama_batch_free(batch)
            self.profile.wall_s += time.perf_counter() - started

    def _close_gaps(self, active: dict[int, _Seq], step_tokens: dict[int, list],
                    free: list[int]) -> None:
        """Move the highest running sequences into the free ids below them, so the step's
        sequences ascend by one (one micro-batch). The cache moves whole (same cells, same
        positions) and the sampler with the request, so the answer does not change. New
        requests take the lowest free ids, so only sequences admitted at an earlier step move.
        """
        while free and active and free[0] < max(active):
            high, low = max(active), free.pop(0)
            self.seqs.copy(high, low)
            self.seqs.cut(high, -1)
            active[low] = active.pop(high)
            step_tokens[low] = step_tokens.pop(high)
            bisect.insort(free, high)
            self.profile.moves += 1

    def _draw(self, active: dict[int, _Seq]) -> dict[int, int | FormatError]:
        """Every active sequence's next token. Free requests draw in one C call each; requests
        with a format draw in threads, one per core (their grammar work is C code that releases
        the GIL, and the cores are otherwise idle between two decodes). llama.cpp's context is
        read here, in this thread: the threads get only their row of logits. A sequence whose
        grammar allows no token gets its :class:`FormatError` instead of a token."""
        drawn: dict[int, int] = {}
        constrained = []
        for seq_id, s in active.items():
            if isinstance(s.sampler, sampling.ConstrainedSampler):
                constrained.append((seq_id, s.sampler,
                                    self.lc.llama_get_logits_ith(self.ctx, s.logit_row)))
            else:
                drawn[seq_id] = s.sampler.sample(self.ctx, s.logit_row)
        if len(constrained) > 1 and self.engine.n_threads > 1:
            if self.pool is None:
                self.pool = ThreadPoolExecutor(self.engine.n_threads,
                                               thread_name_prefix="hpc-chat-sample")
            futures = [self.pool.submit(sampling.draw_or_refuse, c) for c in constrained]
            wait(futures)  # every draw ends before any error is raised: none outlives its sampler
            tokens = [f.result() for f in futures]
        else:
            tokens = [sampling.draw_or_refuse(c) for c in constrained]
        drawn.update(zip((seq_id for seq_id, _, _ in constrained), tokens))
        return drawn

    def _logprob(self, s: _Seq, token: int) -> dict:
        """``token``'s log-probability and the alternatives, from the row it was drawn from
        (the samplers read the row and leave it as the model wrote it)."""
        row = np.ctypeslib.as_array(self.lc.llama_get_logits_ith(self.ctx, s.logit_row),
                                    shape=(self.lc.llama_vocab_n_tokens(self.vocab),))
        return logprobs.entry(row, token, s.req.logprobs or 0, self._piece)

    def _retire(self, s: _Seq) -> None:
        for kind, count in s.sampler.steps.items():
            self.profile.grammar_steps[kind] += count
        s.sampler.free()

    def _finished(self, s: _Seq, token: int) -> bool:
        if self.lc.llama_vocab_is_eog(self.vocab, token):
            s.finish = "stop"
            return True
        s.out.append(token)
        s.text += self._piece(token)
        text = s.text.decode("utf-8", errors="ignore")
        for stop in s.stop:  # the first in the list that appears, as llama-cpp-python
            if stop and stop in text:
                at = s.text.find(stop.encode("utf-8"))  # the bytes kept as decoded
                s.text = s.text[:at] if at >= 0 else text[:text.index(stop)].encode("utf-8")
                s.finish = "stop"
                return True
        if len(s.out) >= s.req.max_tokens:
            s.finish = "length"
            return True
        if not s.job.listen(text):
            s.finish = "cancelled"
            return True
        return False

    def _completion(self, s: _Seq, started: float) -> Completion:
        text = s.text.decode("utf-8", errors="ignore")
        return Completion(  # a text completion's continuation as written (its leading space)
            text=text if s.req.prompt is not None else text.strip(),
            finish_reason=s.finish, prompt_tokens=len(s.prompt),
            completion_tokens=len(s.out), model_load_s=self.engine.load_s,
            model_loaded_now=False, generation_s=time.perf_counter() - s.admitted,
            extra={"batched": True, "batch_wall_s": time.perf_counter() - started,
                   "shared_prompt_tokens": s.shared, "cached_prompt_tokens": s.cached,
                   **({"logprobs": logprobs.within(s.logprobs, len(s.text))}
                      if s.req.logprobs is not None else {})})
