"""llama.cpp chat completion through llama-cpp-python, one request at a time.

A worker process answers many requests; loading a model costs far more than a short answer, so
:func:`hpc_chat.llm.registry.get_engine` keeps one :class:`ChatEngine` per :class:`ModelSpec`
for the life of the process. A ``Llama`` object is not thread-safe, so every call into one
engine holds that engine's lock.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from hpc_chat.errors import GenerationError, PromptTooLongError
from hpc_chat.llm.chunks import chunk_ends, reusable, with_answer
from hpc_chat.llm.grammar import GrammarSamplers
from hpc_chat.llm.models import ModelSpec
from hpc_chat.llm.template import ChatTemplate
from hpc_chat.protocol.output_format import OutputFormat
from hpc_chat.protocol.request import (
    Completion,
    GenRequest,
    prompt_too_long,
    stored_answer_mark,
)
from hpc_chat.structured.tools import as_text_turns

log = logging.getLogger(__name__)


def default_threads() -> int:
    """This worker's share of the CPUs it may run on.

    Parsl's process worker pool exports ``PARSL_WORKER_COUNT``; dividing the CPUs in this
    process's affinity mask by it keeps several workers on one node from oversubscribing cores.
    """
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    workers = int(os.environ.get("PARSL_WORKER_COUNT", "1") or 1)
    return max(1, cpus // max(1, workers))


def debug_enabled() -> bool:
    return logging.getLogger("hpc_chat").isEnabledFor(logging.DEBUG) or \
        os.environ.get("HPC_CHAT_DEBUG") == "1"


class ChatEngine:
    """One loaded GGUF model and a lock around it."""

    def __init__(self, spec: ModelSpec):
        import llama_cpp  # imported here: the driver never needs the native library

        self.spec = spec
        self.n_threads = spec.n_threads or default_threads()
        self._lock = threading.Lock()
        start = time.perf_counter()
        self.llama = llama_cpp.Llama(
            model_path=spec.path,
            n_ctx=spec.n_ctx,
            n_threads=self.n_threads,
            n_threads_batch=self.n_threads,
            n_gpu_layers=spec.n_gpu_layers,
            n_batch=spec.n_batch,
            # Flash attention skips masked cache cells, so a sequence's attention sums the same
            # cells in the same order whether it decodes alone or batched with others; it is
            # also about 10% faster for batched decoding here (docs/performance.md).
            flash_attn=True,
            verbose=debug_enabled(),  # False keeps llama.cpp's native log quiet
        )
        self.load_s = time.perf_counter() - start
        self.calls = 0
        self.grammars = GrammarSamplers(llama_cpp, llama_cpp.llama_model_get_vocab(
            self.llama._model.model))
        self.template: ChatTemplate | None = None  # a GGUF without one: llama-cpp-python's
        if self.llama.metadata.get("tokenizer.chat_template"):
            self.use_template(self.llama.metadata["tokenizer.chat_template"])
        # An earlier answer is evaluated a token per call, as it was decoded, so the cache an
        # answer leaves serves the next turn (llm.chunks); on a GPU a prompt chunk costs about
        # what one token does, so there the answer stays one chunk and only its prompt is reused.
        self.answers_stepwise = spec.n_gpu_layers == 0 or \
            not llama_cpp.llama_supports_gpu_offload()
        self._prefix: list[int] = []  # the tokens the KV cache holds, evaluated in chunks
        self._prefix_ends: tuple[int, ...] = ()  # where those chunks end
        self._piece_bytes = None
        self._never: dict[int, float] | None = None  # logit_bias of ignore_eos, made once
        log.debug("loaded %s in %.2fs with %d threads", spec.path, self.load_s, self.n_threads)

    def use_template(self, template: str) -> None:
        """Make prompts with ``template`` instead of the GGUF's own (a model whose file has
        a wrong or no template; the tests of a template with tool syntax)."""
        llama = self.llama
        self.template = ChatTemplate(template,
                                     eos_token=llama._model.token_get_text(llama.token_eos()),
                                     bos_token=llama._model.token_get_text(llama.token_bos()))
        llama.chat_handler = self.template.chat_handler()  # the same prompt, batched or not
        self._prefix, self._prefix_ends = [], ()

    def prompt_chunks(self, messages: list[dict[str, Any]],
                      tools: list[dict[str, Any]] | None = None,
                      optional: bool = False) -> tuple[list[int], tuple[int, ...]]:
        """The prompt's tokens and where its chunks end (:mod:`hpc_chat.llm.chunks`): one
        chunk up to each message's content, each token of an earlier answer a chunk of its own,
        the last chunk from the final message's content.

        Both this engine and the batched one evaluate each chunk but the last on its own, so
        what a conversation's earlier turns or an agent's other requests share is evaluated
        once and reused, with the same numbers.
        """
        if self.template is None:
            raise GenerationError("the model has no chat template")
        msgs, offered = self.template.messages_for(messages, tools, optional)
        text = self.template.formatter(messages=msgs, tools=offered).prompt
        tokens = self.llama.tokenize(text.encode("utf-8"), add_bos=False, special=True)
        contents = [m.get("content") if isinstance(m.get("content"), str) else None
                    for m in msgs[1:]]
        answers = [self.answers_stepwise and m.get("role") == "assistant" and
                   not stored_answer_mark(m) for m in msgs[1:-1]]
        return tokens, chunk_ends(text, contents, tokens, self.piece_bytes(), lambda part: (
            self.llama.tokenize(part.encode("utf-8"), add_bos=False, special=True)), answers)

    def prompt_tokens(self, messages: list[dict[str, Any]],
                      tools: list[dict[str, Any]] | None = None,
                      optional: bool = False) -> tuple[list[int], int]:
        """The prompt's tokens, and where its last chunk starts (0: it is one chunk)."""
        tokens, ends = self.prompt_chunks(messages, tools, optional)
        return tokens, ends[-1] if ends else 0

    def piece_bytes(self):
        """Each token's length in bytes as a prompt's text spells it (special tokens
        rendered): made once, from llama.cpp's own pieces."""
        if self._piece_bytes is None:
            import llama_cpp
            import numpy as np

            from hpc_chat.llm.sampling import token_piece

            vocab = llama_cpp.llama_model_get_vocab(self.llama._model.model)
            self._piece_bytes = np.array(
                [len(token_piece(llama_cpp, vocab, t, special=True))
                 for t in range(llama_cpp.llama_vocab_n_tokens(vocab))], dtype=np.int64)
        return self._piece_bytes

    def text_tokens(self, text: str) -> list[int]:
        """A text completion's prompt: the text as it is, with the tokens the model puts
        before any text (its BOS, when its vocabulary says so), as llama-server does."""
        return self.llama.tokenize(text.encode("utf-8"), add_bos=True, special=True)

    def _prepare_cache(self, messages: list[dict[str, Any]],
                       tools: list[dict[str, Any]] | None, optional: bool
                       ) -> tuple[list[int], int]:
        """Make every prompt's numbers independent of what this engine answered before.

        llama-cpp-python reuses the KV of whatever prefix the new prompt shares with the
        previous one; how much that is depends on history, and evaluating a prompt in other
        chunks changes the floating-point path, so a fixed seed would not give a fixed answer.
        Here a prompt is always evaluated in the same chunks (:meth:`prompt_chunks`), each but
        the last on its own; the cache keeps them, and the next prompt starts from the chunks
        it shares with them (the same system prompt, or the earlier turns of a conversation).
        Returns the prompt's tokens (none without a template) and how many were found cached.
        """
        if self.template is None:
            self.llama.reset()  # no template to split by: evaluate from scratch
            return [], 0
        full, ends = self.prompt_chunks(messages, tools, optional)
        kept = reusable(self._prefix, self._prefix_ends, full, ends)
        self._prefix, self._prefix_ends = [], ()  # until the chunks below are all in
        if kept and self.llama.n_tokens >= kept:
            self.llama.n_tokens = kept  # drop everything after the shared chunks
            self.llama._ctx.kv_cache_seq_rm(-1, kept, -1)
        else:
            kept = 0
            self.llama.reset()
        found = kept
        for end in ends:
            if end > kept:
                self.llama.eval(full[kept:end])
                kept = end
        self._prefix, self._prefix_ends = full[:kept], ends
        return full, found

    def _keep_answer(self, prompt: list[int]) -> None:
        """After an answer, the cache holds the prompt and the answer's tokens, each decoded
        alone: the next turn of the conversation starts from them, as the batched engine's does
        (:meth:`~hpc_chat.llm.prefix_cache.PrefixCache.keep`)."""
        held = self.llama.input_ids[:self.llama.n_tokens].tolist()  # the array is n_ctx long
        if prompt and held[:len(prompt)] == prompt:  # _prefix: the prompt's leading chunks
            self._prefix_ends = with_answer(self._prefix_ends, len(prompt),
                                            len(held) - len(prompt))
            self._prefix = held

    def _collect(self, chunks, on_text: Callable[[str], bool],
                 prompt_tokens: Callable[[], int]) -> dict[str, Any]:
        """A streamed completion gathered into the shape of a whole one."""
        text, finish = "", "stop"
        for chunk in chunks:
            choice = chunk["choices"][0]
            piece = choice.get("delta", {}).get("content")
            if piece:
                text += piece
                if not on_text(text):
                    finish = "cancelled"
                    chunks.close()  # ends llama-cpp-python's generation loop
                    break
            if choice.get("finish_reason"):
                finish = choice["finish_reason"]
        return {"choices": [{"message": {"content": text}, "finish_reason": finish}],
                "usage": {"prompt_tokens": prompt_tokens(),
                          "completion_tokens": self.count_tokens(text)}}

    def count_tokens(self, text: str) -> int:
        return len(self.llama.tokenize(text.encode("utf-8"), add_bos=False, special=True))

    def complete(self, req: GenRequest, *, loaded_now: bool = False,
                 on_text: Callable[[str], bool] | None = None,
                 until: Callable[[], bool] | None = None) -> Completion:
        """Answer one request (the batched engine takes a list of the same type)."""
        return self.chat(req.messages, loaded_now=loaded_now, on_text=on_text,
                         output=req.output, tools=req.tools, until=until,
                         ignore_eos=req.ignore_eos, **req.sampling())

    def chat(self, messages: list[dict[str, Any]], *, loaded_now: bool = False,
             on_text: Callable[[str], bool] | None = None, output: OutputFormat | None = None,
             tools: list[dict[str, Any]] | None = None,
             until: Callable[[], bool] | None = None, **sampling) -> Completion:
        """Answer a list of messages (:class:`~hpc_chat.protocol.request.GenRequest`'s) with
        the model's chat template; ``sampling`` is any of
        :class:`~hpc_chat.protocol.request.Sampling`'s settings, ``output`` the format the
        answer is constrained to (llama.cpp's grammar sampler, after the penalties, as the
        batched engine has it), and ``tools`` those offered to the model.

        With ``on_text``, the answer is streamed: it hears the text so far after each token
        (llama-cpp-python holds back what may be the start of a stop string), and returning
        False stops the answer there (``finish_reason: cancelled``: the client went away).
        ``until`` returning True also stops it at its next token (a task's time limit:
        :mod:`hpc_chat.worker.time_limit`); the answer is then decoded as a stream, whose
        ``completion_tokens`` are its text's tokens."""
        s = GenRequest(messages=messages, tools=tools, output=output, **sampling)
        optional = s.text_allowed
        if self.template is not None:
            msgs, offered = self.template.messages_for(messages, tools, optional)
        else:
            msgs, offered = as_text_turns(messages, tools, optional), None

        def count_prompt() -> int:
            return len(self.prompt_tokens(messages, tools, optional)[0])

        temperature, max_tokens, seed, stop = s.temperature, s.max_tokens, s.seed, s.stop
        top_p, top_k, repeat_penalty = s.top_p, s.top_k, s.repeat_penalty
        grammar = None
        if output is not None:
            from llama_cpp.llama_grammar import LlamaGrammar

            self.grammars.check(output)  # a grammar llama.cpp cannot parse: refused here
            grammar = LlamaGrammar.from_string(output.gbnf, verbose=False)
        never = None  # ignore_eos: the end-of-generation tokens ahead of the chain, as batched
        if s.ignore_eos:
            if self._never is None:
                import llama_cpp

                from hpc_chat.llm.sampling import eog_tokens

                self._never = {int(t): float("-inf") for t in eog_tokens(
                    llama_cpp, llama_cpp.llama_model_get_vocab(self.llama._model.model))}
            never = self._never
        if until is not None:  # llama-cpp-python's chat call stops only a stream early
            on_text = _stopped_by(until, on_text)
        with self._lock:
            start = time.perf_counter()
            prompt, found = self._prepare_cache(messages, tools, optional)
            try:
                out = self.llama.create_chat_completion(
                    messages=msgs, tools=offered, temperature=temperature, max_tokens=max_tokens,
                    seed=seed, stop=stop or [], top_p=top_p, top_k=top_k,
                    repeat_penalty=repeat_penalty, stream=on_text is not None,
                    grammar=grammar, logit_bias=never)
                if on_text is not None:
                    out = self._collect(out, on_text, count_prompt)
            except ValueError as exc:
                if "exceed context window" in str(exc):
                    raise prompt_too_long(count_prompt(), max_tokens,
                                          self.spec.n_ctx) from None
                raise GenerationError(f"llama.cpp failed: {exc}") from exc
            elapsed = time.perf_counter() - start
            self._keep_answer(prompt)
            self.calls += 1
        choice = out["choices"][0]
        usage = out.get("usage", {})
        return Completion(
            text=(choice["message"].get("content") or "").strip(),
            finish_reason=choice.get("finish_reason") or "stop",
            prompt_tokens=int(usage.get("prompt_tokens", 0)),
            completion_tokens=int(usage.get("completion_tokens", 0)),
            model_load_s=self.load_s,
            model_loaded_now=loaded_now,
            generation_s=elapsed,
            extra={"cached_prompt_tokens": found},
        )


def _stopped_by(until: Callable[[], bool],
                on_text: Callable[[str], bool] | None) -> Callable[[str], bool]:
    return lambda text: not until() and (on_text is None or on_text(text))


__all__ = ["ChatEngine", "Completion", "GenerationError", "PromptTooLongError",
           "default_threads"]
