"""Prompt chunks and the batched engine's prefix cache, without a model: where a prompt is cut,
how much of a cached prompt another reuses, and what the cache asks of the context."""

from __future__ import annotations

import numpy as np

from hpc_chat.llm.chunks import chunk_ends, reusable
from hpc_chat.llm.prefix_cache import PrefixCache, holders_within

ONE_BYTE = np.ones(1024, dtype=np.int64)  # a "tokenizer" whose tokens are single bytes


def chars(text: str) -> list[int]:
    return list(text.encode("utf-8"))


def test_a_prompt_is_cut_where_each_later_message_starts():
    text = "<s>system\nBe brief.</s><s>user\nHi there</s><s>assistant\n"
    ends = chunk_ends(text, ["Hi there"], chars(text), ONE_BYTE)
    assert ends == (text.index("Hi there"),)
    turn2 = text + "Hello!</s><s>user\nHi there</s><s>assistant\n"
    ends2 = chunk_ends(turn2, ["Hi there", "Hello!", "Hi there"], chars(turn2), ONE_BYTE)
    # each content is looked for after the previous one: the repeated message is found again
    assert ends2 == (text.index("Hi there"), turn2.index("Hello!"),
                     turn2.rindex("Hi there"))
    assert ends2[0] == ends[0]  # the shared message is cut at the same place in both turns


def test_an_earlier_answer_is_cut_after_each_of_its_tokens():
    """An answer in the history is evaluated one token per call, as it was generated: cut
    after each token up to where the next text starts; the last message is never so cut."""
    text = "<s>user\nHi</s><s>assistant\nYo!</s><s>user\nAnd?</s><s>assistant\n"
    contents = ["Hi", "Yo!", "And?"]
    start, end = text.index("Yo!"), text.index("Yo!") + 3
    ends = chunk_ends(text, contents, chars(text), ONE_BYTE, stepwise=[False, True])
    assert ends == (text.index("Hi"), start, start + 1, start + 2, end, text.index("And?"))
    assert chunk_ends(text, contents, chars(text), ONE_BYTE, stepwise=[False, False]) == (
        text.index("Hi"), start, text.index("And?"))
    last = chunk_ends(text, contents[:2], chars(text), ONE_BYTE, stepwise=[False])
    assert last == (text.index("Hi"), start)


def test_a_cut_falls_on_the_first_token_at_or_after_the_content():
    text = "ab|cd|ef"
    tokens = [0, 1, 2]  # "ab|", "cd|", "ef"
    sizes = np.array([3, 3, 2])
    assert chunk_ends(text, ["d|", "ef"], tokens, sizes) == (2,)  # "d|" inside token 1: none
    assert chunk_ends(text, ["cd", "ef"], tokens, sizes) == (1, 2)


def test_pieces_that_do_not_spell_the_text_are_cut_by_tokenizing_what_comes_before():
    text = "<s>user\nhello</s><s>user\nworld"
    sizes = ONE_BYTE.copy()
    sizes[ord("<")] = 2  # SentencePiece: a space after each special token, not in the text

    def tokenize(part):  # the same tokenizer on the text before a message, alone
        return chars(part)

    assert chunk_ends(text, ["world"], chars(text), sizes) == ()  # nothing to ask: one chunk
    assert chunk_ends(text, ["hello", "world"], chars(text), sizes, tokenize) == (
        text.index("hello"), text.index("world"))
    merged = chars(text)
    merged[text.index("world") - 1] = 999  # the last token before "world" merges across it
    assert chunk_ends(text, ["world"], merged, sizes, tokenize) == (text.index("world") - 1,)
    assert chunk_ends(text, [None, "absent"], chars(text), ONE_BYTE) == ()


def test_reuse_stops_at_the_first_chunk_that_differs_or_is_cut_elsewhere():
    cached, cached_ends = [1, 2, 3, 4, 5, 6], (2, 4, 6)
    assert reusable(cached, cached_ends, [1, 2, 3, 4, 9, 9, 9], (2, 4, 6)) == 4
    assert reusable(cached, cached_ends, [1, 2, 3, 4, 5, 6, 7, 8], (2, 4, 6, 8)) == 6
    assert reusable(cached, cached_ends, [1, 2, 3, 4, 5, 6], (2, 5)) == 2  # cut elsewhere
    assert reusable(cached, cached_ends, [9, 2, 3, 4], (2, 4)) == 0
    assert reusable([], (), [1, 2, 3], (2,)) == 0


class Ops:
    """What the cache asked of the context, and what each sequence would then hold."""

    def __init__(self):
        self.calls: list[tuple] = []
        self.kv: dict[int, list[int]] = {}

    def copy(self, src, dst):
        self.calls.append(("copy", src, dst))
        self.kv[dst] = list(self.kv.get(src, []))

    def cut(self, seq_id, start):
        self.calls.append(("cut", seq_id, start))
        self.kv[seq_id] = self.kv.get(seq_id, [])[:max(start, 0)]

    def evaluate(self, seq_id, tokens, start):
        self.calls.append(("evaluate", seq_id, len(tokens), start))
        assert len(self.kv.get(seq_id, [])) == start  # chunks go in order, after what is kept
        self.kv[seq_id] = self.kv.get(seq_id, []) + list(tokens)


def test_a_conversation_extends_its_holder_and_a_branch_gets_its_own():
    cache, ops = PrefixCache(first_id=8, count=3), Ops()
    system = [1, 1, 1]
    turn1 = system + [2, 2]
    holder, cached = cache.holder_for(turn1, (3,), ops)
    assert (holder, cached) == (8, 0) and ops.kv[8] == system
    turn2 = turn1 + [3, 3, 4, 4]  # the answer, then the next message
    holder, cached = cache.holder_for(turn2, (3, 5, 7), ops)
    assert (holder, cached) == (8, 3)  # extended in place: it held nothing more
    assert ops.kv[8] == turn2[:7]
    assert [c[0] for c in ops.calls[-2:]] == ["evaluate", "evaluate"]  # one call a chunk
    other = system + [5, 5]  # another conversation with the same system prompt
    holder, cached = cache.holder_for(other, (3,), ops)
    assert (holder, cached) == (8, 3) and cache.fills == 2  # found whole: nothing evaluated
    branch = system + [6, 6, 7, 7]
    holder, cached = cache.holder_for(branch, (3, 5), ops)
    assert (holder, cached) == (9, 3)
    assert ("copy", 8, 9) in ops.calls and ops.kv[9] == branch[:5]
    assert ops.kv[8] == turn2[:7]  # the longer conversation is still cached


def test_the_least_recently_used_holder_makes_room():
    cache, ops = PrefixCache(first_id=2, count=2), Ops()
    prompts = {name: [i] * 4 for i, name in enumerate("abc", start=1)}
    for name in "ab":
        cache.holder_for(prompts[name] + [0], (4,), ops)
    cache.holder_for(prompts["a"] + [0], (4,), ops)  # a is used again: b is the oldest
    holder, _ = cache.holder_for(prompts["c"] + [0], (4,), ops)
    assert holder == 3 and ops.kv[3] == prompts["c"]
    assert cache.holder_for(prompts["a"] + [0], (4,), ops) == (2, 4)
    assert cache.fills == 3


def test_one_holder_is_cut_and_refilled_when_it_is_the_only_one():
    cache, ops = PrefixCache(first_id=1, count=1), Ops()
    cache.holder_for([1, 1, 2, 2, 3], (2, 4), ops)
    holder, cached = cache.holder_for([1, 1, 5, 5, 3], (2, 4), ops)
    assert (holder, cached) == (1, 2) and ops.kv[1] == [1, 1, 5, 5]


def test_the_bound_gives_the_holder_count():
    mb = 1 << 20
    assert holders_within(1024 * mb, 45 * mb) == 22
    assert holders_within(1024 * mb, 512 * mb) == 3  # never fewer than one per packaged agent
    assert holders_within(0, 45 * mb) == 0
    assert holders_within(1 << 40, 1) == 64


def test_a_finished_answer_becomes_the_holder_its_next_turn_starts_from():
    """A finished sequence's prompt and answer are kept as a holder; the next turn finds all
    of it and evaluates only what follows; the turn after replaces that holder rather than
    taking another, while a holder other requests share (a system prompt) is never replaced."""
    cache, ops = PrefixCache(first_id=8, count=3), Ops()
    system = [1, 1, 1]
    turn1 = system + [2, 2]
    holder, _ = cache.holder_for(turn1, (3,), ops)  # the system prompt's holder
    ops.kv[0] = turn1 + [7, 8]  # sequence 0 answered 7, 8
    cache.keep(0, turn1, (3,), [7, 8], ops, source=holder)
    assert ("copy", 0, 9) in ops.calls and ops.kv[9] == turn1 + [7, 8]
    assert ops.kv[8] == system and cache.answers == 1  # the shared holder stays as it was
    turn2 = turn1 + [7, 8, 0, 3, 3]  # a header after the answer, then the next message
    holder, cached = cache.holder_for(turn2, (3, 5, 6, 7, 8), ops)
    assert (holder, cached) == (9, 7) and ops.kv[9] == turn2[:8]  # only the header evaluated
    ops.kv[1] = turn2 + [9]
    cache.keep(1, turn2, (3, 5, 6, 7, 8), [9], ops, source=holder)
    assert ("copy", 1, 9) in ops.calls and ops.kv[9] == turn2 + [9]  # replaced in place
    assert cache.holder_for(system + [4, 4], (3,), ops) == (8, 3)
    off = PrefixCache(first_id=8, count=0)
    off.keep(0, turn1, (3,), [], ops)
    assert not off.held and off.answers == 0


def test_answers_take_free_holders_or_older_answers_never_a_shared_prompt():
    cache, ops = PrefixCache(first_id=4, count=2), Ops()
    cache.holder_for([1, 1, 2], (2,), ops)  # holder 4: a system prompt
    for seq_id, answer in enumerate(([1, 1, 2, 7], [1, 1, 3, 8], [1, 1, 4, 9])):
        ops.kv[seq_id] = answer
        cache.keep(seq_id, answer[:3], (2,), answer[3:], ops)
    assert list(cache.held) == [4, 5] and ops.kv[5] == [1, 1, 4, 9]  # the newest answer
    assert cache.holder_for([1, 1, 5], (2,), ops) == (4, 2) and cache.fills == 1
    ops.kv[0] = [1, 1, 2, 7, 6]
    cache.keep(0, [1, 1, 2, 7], (2, 3, 4), [6], ops)  # replaces the older answer, 5
    assert cache.held[5].answer and not cache.held[4].answer
    branch, kept = cache.holder_for([1, 1, 2, 7, 9, 9, 3], (2, 3, 4, 6), ops)  # a part of it
    assert (branch, kept) == (4, 4) and ops.kv[4] == [1, 1, 2, 7, 9, 9]  # least recently used
    assert cache.held[4].answer  # made from a kept answer: a conversation's, keep may take it
    full = PrefixCache(first_id=4, count=1)
    full.holder_for([1, 1, 2], (2,), ops)
    full.keep(0, [1, 1, 2], (2,), [7], ops)
    assert full.answers == 0 and list(full.held) == [4]  # no room but the shared prompt's
