"""Where a batched engine's time goes (:class:`DecodeProfile`): what the benchmark report
shows to explain its figures."""

from __future__ import annotations

from dataclasses import dataclass, field

from hpc_chat.llm import sampling


@dataclass
class DecodeProfile:
    """Where a batched engine's time goes: what the benchmark report shows to explain its
    figures. ``generation`` maps a number of sequences to (decode calls, seconds) for steps
    that carried only generated tokens, which gives the cost of a token at each batch size."""

    wall_s: float = 0.0
    decode_s: float = 0.0
    sample_s: float = 0.0
    prefix_s: float = 0.0
    prefix_tokens: int = 0
    prompt_tokens: int = 0
    generated_tokens: int = 0
    generation: dict[int, list[float]] = field(default_factory=dict)
    steps: int = 0  # decode calls
    runs: int = 0  # runs of consecutive sequence ids over those calls (llama.cpp's passes)
    moves: int = 0  # running sequences moved down into a lower free id
    # how constrained draws were decided (sampling.STEP_KINDS)
    grammar_steps: dict[str, int] = field(
        default_factory=lambda: dict.fromkeys(sampling.STEP_KINDS, 0))

    def decoded(self, generating: int, prompt: int, seconds: float, runs: int = 1) -> None:
        self.decode_s += seconds
        self.steps += 1
        self.runs += runs
        self.prompt_tokens += prompt
        self.generated_tokens += generating
        if generating and not prompt:
            calls = self.generation.setdefault(generating, [0, 0.0])
            calls[0] += 1
            calls[1] += seconds

    def counters(self) -> dict[str, int]:
        """What a node engine's status reports (:class:`~hpc_chat.protocol.engine.EngineStatus`)."""
        return {"steps": self.steps, "passes": self.runs, "generated": self.generated_tokens}

    def as_dict(self) -> dict:
        return {"wall_s": self.wall_s, "decode_s": self.decode_s, "sample_s": self.sample_s,
                "prefix_s": self.prefix_s, "prefix_tokens": self.prefix_tokens,
                "prompt_tokens": self.prompt_tokens, "generated_tokens": self.generated_tokens,
                "grammar_steps": dict(self.grammar_steps),
                "passes_per_step": self.runs / self.steps if self.steps else 0.0,
                "moves": self.moves,
                # string keys, as they read back from the results JSON
                "ms_per_token_by_batch": {str(b): 1000 * s / (c * b) for b, (c, s)
                                          in sorted(self.generation.items())}}


def passes(step_tokens: dict[int, list]) -> int:
    """How many runs of consecutive sequence ids a step has: llama.cpp's passes over the
    weights for its generated tokens."""
    ids = sorted(step_tokens)
    return sum(1 for i, seq_id in enumerate(ids) if i == 0 or ids[i - 1] != seq_id - 1)
