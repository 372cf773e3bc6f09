"""Where a chat prompt is cut into chunks, and how much of one prompt's cache another may reuse.

A prompt is evaluated in chunks that end where a message's content starts: the first chunk is
the system prompt and the next message's header, each later chunk one message's content and the
next header, and the last chunk the final message and the assistant's header. Both engines cut
every prompt at the same places and evaluate each chunk but the last in a ``llama_decode`` of
its own, so a chunk's cache holds the same numbers whether it was evaluated now, for an earlier
turn of the conversation, or for another agent's request with the same system prompt; and a
prompt may start from any cache that holds the same chunks, cut at the same places (llama.cpp's
numbers for a token depend on the chunk it was evaluated in, so a cache evaluated in other
chunks would change the answer).

An earlier answer in the history (an assistant message before the last message) is cut after
every token, and so evaluated one token per ``llama_decode``, as it was when it was generated:
the cache a sequence holds once its answer ends is then the cache any later prompt with that
history would build, and the next turn of a conversation starts from it (the previous prompt,
the answer, and only the new message and the headers around it evaluated), as llama-server
starts from a slot's. Where a cut falls is decided from the prompt alone (the rendered text and
its tokens), so every turn of a conversation cuts its shared messages at the same places.

An answer the workflow stored in its history (it names its agents: ``"agent"``) is one chunk:
it may join several agents' answers, and the workflow sends a moving window of recent turns,
so no cache holds it as it was decoded, and one chunk is evaluated 2.5 times as fast. On a GPU
every answer is one chunk: a chunk there costs about what one token does, so evaluating an
answer token by token would cost far more than the cache saves (``ChatEngine.answers_stepwise``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np


def chunk_ends(text: str, contents: Sequence[str | None], tokens: Sequence[int],
               piece_bytes: np.ndarray,
               tokenize: Callable[[str], Sequence[int]] | None = None,
               stepwise: Sequence[bool] = ()) -> tuple[int, ...]:
    """The token indices where the prompt's chunks end (each a later chunk's start), in order.

    ``contents`` are the rendered messages' contents after the first (``None`` where a message
    has no text content: it starts no chunk); each is looked for in ``text`` after the previous
    one, and the chunk ends at the first token that starts at or after it. A content whose
    ``stepwise`` entry is true (an earlier answer) is also cut after each of its tokens, up to
    the first token that starts at or after its end. ``piece_bytes``
    gives each token's length in bytes as the text spells it. A tokenizer whose pieces do not
    spell the text (SentencePiece adds a space after special tokens) is asked instead
    (``tokenize``): the chunk ends where the text before the content, tokenized alone, stops
    agreeing with the prompt's tokens. Without ``tokenize`` such a prompt is one chunk.
    """
    ids = np.asarray(tokens, dtype=np.int64)
    if not len(ids):
        return ()
    starts = np.concatenate(([0], np.cumsum(piece_bytes[ids])))
    spelled = starts[-1] == len(text.encode("utf-8"))
    if not spelled and tokenize is None:
        return ()
    def index_at(chars: int) -> int:  # the first token starting at or after text[chars]
        if spelled:
            return int(np.searchsorted(starts, len(text[:chars].encode("utf-8")), side="left"))
        return _agreeing(tokenize(text[:chars]), tokens)  # type: ignore[misc]

    ends: list[int] = []
    at = 0  # characters of text searched so far
    for i, content in enumerate(contents):
        if not content:
            continue
        found = text.find(content, at)
        if found < 0:
            continue
        at = found + len(content)
        cuts = [index_at(found)]
        if i < len(stepwise) and stepwise[i]:
            cuts += range(cuts[0] + 1, index_at(at) + 1)
        for index in cuts:
            if 0 < index < len(ids) and (not ends or index > ends[-1]):
                ends.append(index)
    return tuple(ends)


def with_answer(ends: Sequence[int], prompt_len: int, answered: int) -> tuple[int, ...]:
    """Where the chunks of a prompt (``ends``) and of the answer's first ``answered`` tokens
    end: the prompt's last chunk, then each answer token a chunk of its own, as the next turn's
    prompt cuts that answer (it was decoded one token per step)."""
    return tuple(ends) + tuple(range(prompt_len, prompt_len + answered + 1))


def _agreeing(prefix: Sequence[int], tokens: Sequence[int]) -> int:
    n = 0
    for mine, theirs in zip(prefix, tokens):
        if mine != theirs:
            break
        n += 1
    return n


def reusable(cached: Sequence[int], cached_ends: Sequence[int], tokens: Sequence[int],
             ends: Sequence[int]) -> int:
    """How many of ``tokens`` a cache holding ``cached`` (cut at ``cached_ends``) already
    holds: the longest run of whole chunks cut at the same places with the same tokens (0 when
    the first chunk differs). An answer's chunks are single tokens, so the tokens are compared
    once, not chunk by chunk."""
    n = min(len(cached), len(tokens))
    differ = np.flatnonzero(np.asarray(cached[:n], dtype=np.int64) !=
                            np.asarray(tokens[:n], dtype=np.int64))
    same = int(differ[0]) if len(differ) else n  # the tokens both start with
    kept = 0
    for mine, theirs in zip(ends, cached_ends):
        if mine != theirs or mine > same:
            break
        kept = mine
    return kept
