"""The batched engine's prompt cache: holder sequences that keep the chunks prompts share.

Each holder is a sequence of the batched context (a KV stream of its own) that holds the
leading chunks of some prompt (:mod:`hpc_chat.llm.chunks`): an agent's system prompt, or a
conversation up to its latest message. A new request copies the holder with the most of its
chunks into its own sequence (``llama_memory_seq_cp``), evaluates only the chunks no holder has,
and decodes its final chunk in the batch. When it ends, its cache (the prompt and the answer)
becomes a holder too (:meth:`PrefixCache.keep`), which the conversation's next turn extends by
its new message only. A holder whose chunks are all a new prompt's first
ones is extended in place; one that holds more than a prompt shares is copied to another holder
first and cut there, so the longer prompt stays cached for its own conversation. The least
recently used holder makes room when none is free.

How many holders there are is a memory bound: each costs a whole stream of KV cells, so the
number is the bound divided by one stream's size (:func:`holders_within`).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Protocol

from hpc_chat.llm.chunks import reusable, with_answer

MIN_HOLDERS = 3  # one per agent of the packaged workflow, whatever the bound
MAX_HOLDERS = 64


def holders_within(bound_bytes: int, stream_bytes: int, room: int = MAX_HOLDERS) -> int:
    """How many holder streams fit in ``bound_bytes`` (at least :data:`MIN_HOLDERS` unless
    the bound is 0, which turns the cache off), and in the ``room`` llama.cpp has left for
    sequences."""
    if bound_bytes <= 0:
        return 0
    return max(0, min(room, max(MIN_HOLDERS, min(MAX_HOLDERS,
                                                 bound_bytes // max(1, stream_bytes)))))


class SequenceOps(Protocol):
    """What the cache asks of the engine's context."""

    def copy(self, src: int, dst: int) -> None: ...

    def cut(self, seq_id: int, start: int) -> None: ...

    def evaluate(self, seq_id: int, tokens: list[int], start: int) -> None: ...


@dataclass
class _Held:
    tokens: list[int]
    ends: tuple[int, ...]
    answer: bool = False  # a finished answer's conversation: only its next turn wants it


class PrefixCache:
    """Holders ``first_id`` .. ``first_id + count - 1`` and what each holds."""

    def __init__(self, first_id: int, count: int):
        self.unused = list(range(first_id, first_id + count))
        self.held: OrderedDict[int, _Held] = OrderedDict()  # least recently used first
        self.fills = 0  # how often chunks were evaluated into a holder
        self.reused_tokens = 0  # prompt tokens found in a holder instead of evaluated
        self.answers = 0  # how often a finished answer's cache was kept

    def holder_for(self, tokens: list[int], ends: tuple[int, ...],
                   ops: SequenceOps) -> tuple[int, int]:
        """A holder whose cache holds ``tokens`` up to its last chunk (``ends[-1]``), cut at
        ``ends``: found, extended, or made from the best match; and how many of those tokens
        were found already evaluated."""
        need = ends[-1]
        best, kept, exact = None, 0, False
        for seq_id, held in self.held.items():
            k = reusable(held.tokens, held.ends, tokens, ends)
            fits = len(held.tokens) == k  # extended in place, no copy, nothing evicted
            if k > kept or (k == kept and k and fits and not exact):
                best, kept, exact = seq_id, k, fits
        self.reused_tokens += kept
        origin = self.held.get(best) if best is not None else None  # what it is made from
        if best is not None and (kept == need or exact):
            target = best  # holds all that is needed, or holds no more than it shares
        else:
            target = self._take(avoid=best)
            if best is not None and target != best:
                ops.copy(best, target)
            ops.cut(target, kept)
        if kept < need:
            self.held.pop(target, None)  # holds something else until the chunks are in
            try:
                start = kept
                for end in ends:
                    if end > start:
                        ops.evaluate(target, tokens[start:end], start)
                        start = end
            except BaseException:
                ops.cut(target, 0)  # a decode that failed half-way: an empty holder
                self.unused.append(target)
                raise
            self.fills += 1
            self.held[target] = _Held(list(tokens[:need]), tuple(ends),  # from an answer: a
                                      answer=origin is not None and origin.answer)  # history
        self.held.move_to_end(target)
        return target, kept

    def keep(self, seq_id: int, prompt: list[int], ends: tuple[int, ...], answer: list[int],
             ops: SequenceOps, source: int | None = None) -> None:
        """Make a finished sequence's cache a holder, so the conversation's next turn starts
        from it: its ``prompt`` cut at ``ends``, and the ``answer``'s tokens it decoded, one
        chunk each (:func:`~hpc_chat.llm.chunks.with_answer`).
        It replaces ``source``, the holder the sequence was copied from, when that holder is
        an earlier turn of the same conversation (nothing else wants it now); otherwise it
        takes a free holder or the least recently used one holding an answer. It never
        evicts chunks requests share (a system prompt), so a burst of answers cannot push an
        agent's prompt out; with no such room the answer is not kept."""
        tokens, ends = prompt + answer, with_answer(ends, len(prompt), len(answer))
        old = self.held.get(source) if source is not None else None
        if old is not None and old.answer and \
                reusable(tokens, ends, old.tokens, old.ends) == len(old.tokens):
            target = source
        elif self.unused:
            target = self.unused.pop(0)
        else:
            target = next((h for h, held in self.held.items() if held.answer), None)
            if target is None:
                return
            del self.held[target]
        ops.copy(seq_id, target)
        self.held[target] = _Held(list(tokens), tuple(ends), answer=True)
        self.held.move_to_end(target)
        self.answers += 1

    def _take(self, avoid: int | None) -> int:
        """An unused holder, or the least recently used one other than ``avoid`` (``avoid``
        itself when it is the only one)."""
        if self.unused:
            return self.unused.pop(0)
        victim = next((s for s in self.held if s != avoid), avoid)
        del self.held[victim]
        return victim


class KVSequences:
    """:class:`SequenceOps` on a llama.cpp context with one KV stream per sequence: a copy
    copies the whole stream (when the context next decodes), a cut forgets cells from a
    position on, and a chunk is evaluated in a ``llama_decode`` of its own, as the unbatched
    engine evaluates it, so its cache holds the same numbers."""

    def __init__(self, lc, ctx, n_batch: int, profile):
        self.lc, self.ctx, self.profile = lc, ctx, profile
        self.memory = lc.llama_get_memory(ctx)
        self.batch = lc.llama_batch_init(n_batch, 0, 1)

    def close(self) -> None:
        if self.batch is not None:
            self.lc.llama_batch_free(self.batch)
            self.batch = None

    def copy(self, src: int, dst: int) -> None:
        self.lc.llama_memory_seq_cp(self.memory, src, dst, -1, -1)

    def cut(self, seq_id: int, start: int) -> None:
        self.lc.llama_memory_seq_rm(self.memory, seq_id, start, -1)

    def evaluate(self, seq_id: int, tokens: list[int], start: int) -> None:
        batch = self.batch
        for i, tok in enumerate(tokens):
            batch.token[i] = tok
            batch.pos[i] = start + i
            batch.n_seq_id[i] = 1
            batch.seq_id[i][0] = seq_id
            batch.logits[i] = i == len(tokens) - 1
        batch.n_tokens = len(tokens)
        began = time.perf_counter()
        rc = self.lc.llama_decode(self.ctx, batch)
        if rc != 0:
            raise RuntimeError(f"llama_decode failed with code {rc} (a shared prompt chunk)")
        self.profile.prefix_s += time.perf_counter() - began
        self.profile.prefix_tokens += len(tokens)
