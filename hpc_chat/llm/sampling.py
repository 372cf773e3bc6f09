"""One request's draw of its next token in the batched engine, with or without a grammar.

A free request samples with its llama.cpp chain in one C call (``llama_sampler_sample``):
penalties, then greedy or top-k, top-p, min-p, temperature and a seeded draw (llama-cpp-python's
chain also has ``typical(1.0)``, which changes nothing, so it is left out). llama.cpp's
penalties sampler looks every token of the vocabulary up in its table of recent tokens: 0.18 of
the 0.23 ms a draw took here. Only the at most 64 recent tokens change, so :class:`ChainSampler`
applies the same arithmetic to those alone, in float32 as llama.cpp does, on the row of logits
before the rest of the chain reads it (unless the request asks for logprobs, which are read from
that row afterwards: then llama.cpp's own penalties sampler stays in the chain).

A request with a format has llama.cpp's grammar sampler between the penalties and the rest, as
llama-cpp-python orders them. Applied to every token of the vocabulary (49,152 for SmolLM2),
the grammar matches each token's text against its stacks at every step, and that cost as much
as the decoding itself (docs/structured-outputs.md). But what the rest of the chain keeps after
the grammar is decided by a few of the likeliest tokens: greedy keeps the likeliest allowed
token, top-k the k likeliest allowed. So :class:`ConstrainedSampler` checks the grammar on the
:data:`SHORTLIST` likeliest tokens (after the penalties) first. When at least as many of them
as the chain keeps (1 for greedy, ``top_k`` otherwise) are allowed and likelier than every
token left out, the tokens the rest of the chain sees are exactly the ones it sees after the
grammar on the whole vocabulary, and it draws from them with the same seeded generator; when
not (a point of the grammar that allows few tokens, such as a key or an enum value), the
grammar is applied to the tokens whose first character it allows (:class:`VocabIndex`: a
token whose first character the grammar rejects is rejected whole, so the rest need no check)
and the rest of the chain draws from those. The answer is the same either way, so a
constrained answer decoded in the batch still equals the same request decoded alone
(tests/integration/test_structured_outputs.py). llama-server takes a cheaper shortcut that is
not exact: it samples without the grammar and resamples when the grammar rejects the token.
"""

from __future__ import annotations

import ctypes
from collections import deque

import numpy as np

from hpc_chat.errors import FormatError
from hpc_chat.llm.grammar import PARAM_OF

STEP_KINDS = ("shortlist", "first_character", "vocabulary")
PENALTY_LAST_N = 64  # llama-cpp-python's last_n_tokens_size default
MIN_P = 0.05  # create_chat_completion's default
SHORTLIST = 256  # candidates the grammar sees first: well above top_k's default of 40

# llama.cpp's llama_token_data: {int32 id; float logit; float p}
TOKEN_DATA = np.dtype([("id", "<i4"), ("logit", "<f4"), ("p", "<f4")], align=True)


def sampler_for(lc, vocab, req, seed: int, grammars, index: VocabIndex | None,
                eog: np.ndarray | None = None):
    """A request's own sampler, in llama-cpp-python's order: penalties, the grammar (when the
    answer has a format, from ``grammars``, a :class:`~hpc_chat.llm.grammar.GrammarSamplers`),
    then greedy or the stochastic samplers. A request with a format gets the three as separate
    pieces (:class:`ConstrainedSampler`, which needs ``index``), so the grammar can be checked
    on a shortlist first. ``eog`` (:func:`eog_tokens`) is needed by a request with
    ``ignore_eos`` (never one with a format: :class:`~hpc_chat.protocol.request.GenRequest`
    refuses the pair)."""
    grammar = grammars.new(req.output) if req.output is not None else None  # may refuse
    n_vocab = lc.llama_vocab_n_tokens(vocab)
    own = grammar is None and req.logprobs is None  # the penalty applied by ChainSampler
    penalties = None if own else lc.llama_sampler_init_penalties(
        n_vocab, PENALTY_LAST_N, req.repeat_penalty, 0.0, 0.0)
    rest = lc.llama_sampler_chain_init(lc.llama_sampler_chain_default_params())
    if req.temperature == 0.0:
        lc.llama_sampler_chain_add(rest, lc.llama_sampler_init_greedy())
    else:
        lc.llama_sampler_chain_add(rest, lc.llama_sampler_init_top_k(req.top_k))
        # llama-cpp-python's chain has typical(1.0) here, which returns at once: left out
        lc.llama_sampler_chain_add(rest, lc.llama_sampler_init_top_p(req.top_p, 1))
        lc.llama_sampler_chain_add(rest, lc.llama_sampler_init_min_p(MIN_P, 1))
        lc.llama_sampler_chain_add(rest, lc.llama_sampler_init_temp(req.temperature))
        lc.llama_sampler_chain_add(rest, lc.llama_sampler_init_dist(seed))
    if grammar is not None:
        keep = 1 if req.temperature == 0.0 else req.top_k
        param = PARAM_OF.get(req.output.kind, "response_format")
        return ConstrainedSampler(lc, index, penalties, grammar, rest, keep, param)
    banned = eog if req.ignore_eos else None
    if own:  # the row of logits may be changed: see ChainSampler
        return ChainSampler(lc, rest, n_vocab, req.repeat_penalty, banned)
    chain = lc.llama_sampler_chain_init(lc.llama_sampler_chain_default_params())
    lc.llama_sampler_chain_add(chain, penalties)
    lc.llama_sampler_chain_add(chain, rest)  # a chain owns and frees what it holds
    return ChainSampler(lc, chain, n_vocab, banned=banned)


def eog_tokens(lc, vocab) -> np.ndarray:
    """The vocabulary's end-of-generation tokens (end of text, of turn, ...): what
    ``ignore_eos`` takes out of every draw, as llama.cpp's own ``ignore_eos`` does."""
    n_vocab = lc.llama_vocab_n_tokens(vocab)
    return np.array([t for t in range(n_vocab) if lc.llama_vocab_is_eog(vocab, t)],
                    dtype=np.int64)


class VocabIndex:
    """Each token's text as the grammar sees it (llama.cpp matches the piece with special
    tokens rendered), grouped by its first character, with a one-character *probe* token per
    group: when the grammar rejects the probe, it rejects every token of that group. Tokens
    whose first character has no probe token, or whose piece does not start with a whole
    UTF-8 character, and end-of-generation tokens, are always checked."""

    def __init__(self, lc, vocab, n_vocab: int):
        self.pieces = [token_piece(lc, vocab, token, special=True) for token in range(n_vocab)]
        first: dict[str, list[int]] = {}
        by_piece: dict[bytes, int] = {}
        for token, piece in enumerate(self.pieces):
            if lc.llama_vocab_is_eog(vocab, token):  # judged by the grammar's end, not text
                continue
            by_piece.setdefault(piece, token)
            char = _first_char(piece)
            if char is not None:
                first.setdefault(char, []).append(token)
        probes = {char: by_piece[char.encode("utf-8")] for char in first
                  if char.encode("utf-8") in by_piece}
        self.probe_ids = np.array(list(probes.values()), dtype=np.int32)
        self.group = np.full(n_vocab, -1, dtype=np.int32)  # probe slot, or -1: always check
        for slot, char in enumerate(probes):
            self.group[first[char]] = slot

    @staticmethod
    def pending(tail: bytes) -> bytes:
        """The trailing bytes of ``tail`` that do not yet make a whole UTF-8 character."""
        for back in range(1, min(4, len(tail)) + 1):
            lead = tail[-back]
            if lead & 0xC0 != 0x80:  # not a continuation byte: a character starts here
                need = 1 if lead < 0x80 else 2 if lead >> 5 == 6 else 3 if lead >> 4 == 14 else 4
                return tail[-back:] if back < need else b""
        return tail[-4:]


def token_piece(lc, vocab, token: int, special: bool) -> bytes:
    """A token's text; llama.cpp says how long a piece is when the buffer is too short."""
    buf = ctypes.create_string_buffer(128)
    n = lc.llama_token_to_piece(vocab, token, buf, len(buf), 0, special)
    if n < 0:
        buf = ctypes.create_string_buffer(-n)
        n = lc.llama_token_to_piece(vocab, token, buf, len(buf), 0, special)
    return buf.raw[:n] if n > 0 else b""


def _first_char(piece: bytes) -> str | None:
    if not piece:
        return None
    for size in (1, 2, 3, 4):
        try:
            return piece[:size].decode("utf-8")
        except UnicodeDecodeError:
            continue
    return None


class ChainSampler:
    """A free request's sampler chain, drawn from in one C call. With ``repeat_penalty`` the
    chain has no penalties sampler: the penalty is applied here to the tokens of the last
    :data:`PENALTY_LAST_N` drawn, on the row of logits itself, exactly as llama.cpp's
    ``llama_sampler_penalties`` would (no frequency or presence penalty: both 0 here). The
    ``banned`` tokens (``ignore_eos``'s) get a logit of minus infinity first, as the unbatched
    engine's ``logit_bias`` gives them ahead of its chain."""

    def __init__(self, lc, chain, n_vocab: int, repeat_penalty: float | None = None,
                 banned: np.ndarray | None = None):
        self.lc, self.chain, self.n_vocab, self.banned = lc, chain, n_vocab, banned
        self.steps = dict.fromkeys(STEP_KINDS, 0)
        # as llama.cpp holds it (a C float); 1: no penalty, as llama.cpp skips it
        self.penalty = None if repeat_penalty in (None, 1.0) else np.float32(repeat_penalty)
        self.recent: deque[int] = deque()  # the last PENALTY_LAST_N tokens drawn
        self.counts: dict[int, int] = {}  # how often each of them occurs there

    def sample(self, ctx, row: int) -> int:
        if self.banned is not None:
            logits = np.ctypeslib.as_array(self.lc.llama_get_logits_ith(ctx, row),
                                           shape=(self.n_vocab,))
            logits[self.banned] = -np.inf
        if self.penalty is not None and self.counts:
            logits = np.ctypeslib.as_array(self.lc.llama_get_logits_ith(ctx, row),
                                           shape=(self.n_vocab,))
            ids = np.fromiter(self.counts, dtype=np.int64, count=len(self.counts))
            seen = logits[ids]
            with np.errstate(all="ignore"):  # both branches are computed; one is kept
                logits[ids] = np.where(seen <= 0, seen * self.penalty, seen / self.penalty)
        token = self.lc.llama_sampler_sample(self.chain, ctx, row)
        if self.penalty is not None:
            self._accept(token)
        return token

    def _accept(self, token: int) -> None:
        """llama.cpp's ``llama_sampler_penalties_accept``: a ring of the last tokens drawn."""
        self.counts[token] = self.counts.get(token, 0) + 1
        if len(self.recent) >= PENALTY_LAST_N:
            old = self.recent.popleft()
            self.counts[old] -= 1
            if not self.counts[old]:
                del self.counts[old]
        self.recent.append(token)

    def free(self) -> None:
        self.lc.llama_sampler_free(self.chain)


class ConstrainedSampler:
    """Penalties, the grammar, then ``rest`` (greedy, or top-k through the seeded draw), with
    the grammar checked on a shortlist first. ``keep`` is how many tokens ``rest`` keeps (1 for
    greedy, ``top_k`` otherwise; 0 when it keeps them all, which needs the whole vocabulary).
    ``steps`` counts the draws decided each way (:data:`STEP_KINDS`; the bench reports them)."""

    def __init__(self, lc, index: VocabIndex, penalties, grammar, rest, keep: int,
                 param: str = "response_format"):
        n_vocab = len(index.group)
        self.lc, self.n_vocab, self.index = lc, n_vocab, index
        self.tail = b""  # accepted bytes that do not yet make a whole character
        self.param = param  # the request key a dead end of the grammar is blamed on
        self.penalties, self.grammar, self.rest = penalties, grammar, rest
        self.keep = keep if 0 < keep < SHORTLIST < n_vocab else 0
        self.ids = np.arange(n_vocab, dtype=np.int32)
        self.all = np.zeros(n_vocab, TOKEN_DATA)
        self.short = np.zeros(SHORTLIST, TOKEN_DATA)
        self.probes = np.zeros(len(index.probe_ids), TOKEN_DATA)
        pointer = ctypes.POINTER(lc.llama_token_data)
        self.all_view = lc.llama_token_data_array(
            data=self.all.ctypes.data_as(pointer), size=n_vocab, selected=-1, sorted=False)
        self.short_view = lc.llama_token_data_array(
            data=self.short.ctypes.data_as(pointer), size=SHORTLIST, selected=-1, sorted=False)
        self.probe_view = lc.llama_token_data_array(
            data=self.probes.ctypes.data_as(pointer), size=len(self.probes), selected=-1,
            sorted=False)
        self.steps = dict.fromkeys(STEP_KINDS, 0)

    def sample(self, logits_pointer) -> int:
        """The next token from this sequence's row of logits (``llama_get_logits_ith``, read
        by the caller: several sequences may sample at once, each in its own thread)."""
        lc = self.lc
        logits = np.ctypeslib.as_array(logits_pointer, shape=(self.n_vocab,))
        self.all["id"] = self.ids  # the rest of the chain may have sorted it last step
        self.all["logit"] = logits
        view = self._reset(self.all_view, self.n_vocab)
        lc.llama_sampler_apply(self.penalties, ctypes.byref(view))  # in place, in id order
        token, kind = (self._from_shortlist() if self.keep else None), "shortlist"
        if token is None and not self.tail:
            token, kind = self._from_first_characters(), "first_character"
        if token is None:  # mid-character: the grammar sees every token
            kind = "vocabulary"
            view = self._reset(self.all_view, self.n_vocab)
            lc.llama_sampler_apply(self.grammar, ctypes.byref(view))
            self._check_not_dead_end(self.all)
            lc.llama_sampler_apply(self.rest, ctypes.byref(view))
            token = int(self.all["id"][view.selected])
        self.steps[kind] += 1
        for sampler in (self.penalties, self.grammar, self.rest):
            lc.llama_sampler_accept(sampler, token)
        self.tail = self.index.pending(self.tail + self.index.pieces[token])
        return token

    def _from_first_characters(self) -> int | None:
        """The token drawn from the tokens whose first character the grammar allows (every
        other token is rejected by the grammar, so the rest of the chain sees the same
        allowed tokens, without the rejected ones at -inf)."""
        index = self.index
        self.probes["id"] = index.probe_ids
        self.probes["logit"] = 0.0
        view = self._reset(self.probe_view, len(self.probes))
        self.lc.llama_sampler_apply(self.grammar, ctypes.byref(view))
        allowed = np.append(np.isfinite(self.probes["logit"]), True)  # slot -1: check
        candidates = self.all[allowed[index.group]]  # a copy, in id order
        view = self.lc.llama_token_data_array(
            data=candidates.ctypes.data_as(ctypes.POINTER(self.lc.llama_token_data)),
            size=len(candidates), selected=-1, sorted=False)
        self.lc.llama_sampler_apply(self.grammar, ctypes.byref(view))
        self._check_not_dead_end(candidates)
        self.lc.llama_sampler_apply(self.rest, ctypes.byref(view))
        return int(candidates["id"][view.selected])

    def _check_not_dead_end(self, tokens) -> None:
        """Refuse to go on where the grammar allows no token: accepting one anyway would make
        llama.cpp abort the whole engine (a raw grammar can demand a character no token
        writes). Only this request fails."""
        if not np.isfinite(tokens["logit"]).any():
            raise FormatError(f"{self.param}: the grammar allows no token here and does not "
                              f"end (it asks for text this model's tokens cannot write)",
                              param=self.param)

    def _from_shortlist(self) -> int | None:
        """The token drawn from the shortlist, or None when the shortlist cannot decide."""
        logit = self.all["logit"]
        order = np.argpartition(logit, self.n_vocab - SHORTLIST - 1)
        edge = logit[order[self.n_vocab - SHORTLIST - 1]]  # the likeliest token left out
        top = np.sort(order[self.n_vocab - SHORTLIST:])  # in id order, as in the whole array
        self.short["id"] = top
        self.short["logit"] = logit[top]
        self.short["p"] = 0.0
        view = self._reset(self.short_view, SHORTLIST)
        self.lc.llama_sampler_apply(self.grammar, ctypes.byref(view))  # rejected: -inf
        if np.count_nonzero(self.short["logit"] > edge) < self.keep:
            return None
        self.lc.llama_sampler_apply(self.rest, ctypes.byref(view))
        return int(self.short["id"][view.selected])

    @staticmethod
    def _reset(view, size: int):
        view.size, view.selected, view.sorted = size, -1, False
        return view

    def free(self) -> None:
        for sampler in (self.penalties, self.grammar, self.rest):
            self.lc.llama_sampler_free(sampler)


def draw_or_refuse(constrained: tuple) -> int | FormatError:
    """``(seq_id, sampler, logits)``'s next token, or the error of a grammar at a dead end
    (returned, not raised: the other sequences drawing at the same time go on)."""
    _, sampler, logits = constrained
    try:
        return sampler.sample(logits)
    except FormatError as exc:
        return exc
