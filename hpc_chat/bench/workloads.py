"""The typed results of most sections ``hpc-chat bench --only`` measures on their own (the
real workload's and the schema's share the suite's batch-run shapes and stay in
:mod:`hpc_chat.bench.results`, which holds these beside the suite's other figures): each says
when and where it was measured, and keeps every repeat's raw numbers."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from hpc_chat.bench.rates import Measured, NativeAtLength, Rate, ResultModel, TurnsRate


class EmbedRate(Rate):
    inputs_s: float
    dimensions: int


class EmbeddingWorkload(Measured):
    """A corpus embedded through ``/v1/embeddings`` (:mod:`hpc_chat.bench.embeddings`)."""

    inputs: int
    per_request: int
    clients: int
    agent: str
    repeats: int = 3
    llama_server_slots: int
    hpc_chat: EmbedRate
    llama_server: EmbedRate | None = None


class ScaleRun(ResultModel):
    lines: int
    task_size: int | None = None  # requests per task (older results: not recorded)
    task_size_given: bool = False  # --task-size, not the workflow's batch_size
    wall_s: float
    lines_s: float
    peak_rss_mb: float
    resume_s: float | None = None  # --resume over the finished output (none left to run)
    resume_peak_rss_mb: float | None = None


class ScaleWorkload(Measured):
    """``hpc-chat batch`` at corpus scale with the echo model (:mod:`hpc_chat.bench.scale`)."""

    model: str
    runs: list[ScaleRun]


class CollabRate(Rate):
    requests: int
    start_s: float | None = None
    steady_tok_s: float | None = None
    prompt_tokens: int | None = None  # over every round; None: an older file, as below
    tok_s_min: float | None = None  # the range of the figure compared: tokens/s for the peers,
    tok_s_max: float | None = None  # tokens/s after the start (steady_) for hpc_chat
    steady_tok_s_min: float | None = None
    steady_tok_s_max: float | None = None

    @property
    def compared_range(self) -> tuple[float, float] | None:
        if self.steady_tok_s_min is not None:
            return self.steady_tok_s_min, self.steady_tok_s_max
        if self.tok_s_min is not None:
            return self.tok_s_min, self.tok_s_max
        return None


class Quality(ResultModel):
    questions: int
    route: float
    review: float
    route_tokens: int
    review_tokens: int


class CollaborationWorkload(Measured):
    """A 3-agent ``synthesize`` over the real prompts (:mod:`hpc_chat.bench.collaboration`)."""

    prompts: int
    agents: list[str]
    aggregator: str
    repeats: int = 3
    order: list[str] = Field(default_factory=list)  # the runs' ABBA order (older: not kept)
    sequential_prompts: int
    fresh_servers: bool = False  # each llama-server run on its own server (older: one kept)
    hpc_chat: CollabRate
    concurrent: CollabRate | None = None
    sequential: CollabRate | None = None
    quality: Quality

    @property
    def vs_concurrent(self) -> float | None:
        """hpc-chat's tokens/s after its start / the concurrent client's (its server
        started before the timer)."""
        if self.concurrent is None:
            return None
        return (self.hpc_chat.steady_tok_s or self.hpc_chat.tok_s) / self.concurrent.tok_s


class CollabEqualWorkload(Measured):
    """The ``synthesize`` pattern with every answer of a prompt one length on both peers
    (:mod:`hpc_chat.bench.collab_equal`)."""

    prompts: int
    agents: list[str]
    aggregator: str
    repeats: int
    order: list[str]
    lengths: list[int]  # every answer of prompt i: from a natural hpc-chat run
    natural_tokens: int  # what that run generated
    expected_tokens: int  # what every answer at its length makes
    fresh_servers: bool = False  # each llama-server run on its own server (older: one kept)
    hpc_chat: CollabRate
    concurrent: CollabRate

    @property
    def vs_concurrent(self) -> float:
        """hpc-chat's tokens/s after its start / the concurrent client's (its server
        started before the timer)."""
        return (self.hpc_chat.steady_tok_s or self.hpc_chat.tok_s) / self.concurrent.tok_s


class MultiTurnWorkload(Measured):
    """Conversations, each request with its whole history (:mod:`hpc_chat.bench.multiturn`)."""

    conversations: int
    turns: int
    repeats: int
    order: list[str]
    system_info: str = ""  # llama_print_system_info(): the CPU features llama.cpp uses
    fresh_peers: bool = False  # each run on a server started for it (older: servers kept)
    hpc_chat: TurnsRate
    llama_server: dict[int, TurnsRate] = Field(default_factory=dict)

    @property
    def vs_best_server(self) -> float | None:
        """hpc-chat serve's tokens/s / the best llama-server configuration's."""
        if not self.llama_server:
            return None
        return self.hpc_chat.tok_s / max(r.tok_s for r in self.llama_server.values())


class EqualWorkload(Measured):
    """The real workload on warm servers, answers of equal length (:mod:`hpc_chat.bench.equal`):
    ``peers[peer][way]``, ``way`` ``open`` (every request at once) or ``clients``."""

    requests: int
    repeats: int
    clients: int
    order: list[str]
    system_info: str
    server_version: str = ""  # llama-server --version (its build may differ from the library's)
    lengths: list[int]
    fresh_peers: bool = False  # each run on a server started for it (older: servers kept)
    peers: dict[str, dict[str, TurnsRate]]

    def vs_best_server(self, way: str) -> float | None:
        """Warm serve's tokens/s / the best llama-server configuration's, sent ``way``."""
        servers = [ways[way].tok_s for name, ways in self.peers.items() if name != "hpc_chat"]
        return self.peers["hpc_chat"][way].tok_s / max(servers) if servers else None

    @property
    def prompts_agree(self) -> bool | None:
        """In every run, every peer counted the same prompt tokens and gave each answer its
        length (the same number of tokens; the tokens themselves differ between engines);
        None when the totals agree but each answer's length was not recorded."""
        runs = [run for ways in self.peers.values() for r in ways.values()
                for run in (r.runs or [r.model_dump()])]
        matched = [run.get("lengths_match") for run in runs]
        if len({(run["prompt_tokens"], run["tokens"]) for run in runs}) != 1 or \
                False in matched:
            return False
        return None if None in matched else True


class FormatRate(ResultModel):
    loop_tok_s: float
    tok_s: float  # the batched engine's
    perplexity: float
    scored_tokens: int
    bytes: int
    same_answers: bool
    runs: list[dict[str, Any]] = Field(default_factory=list)


class FormatsWorkload(Measured):
    """The embedded model in each weight format (:mod:`hpc_chat.bench.formats`)."""

    repeats: int
    order: list[str]
    loop_requests: int
    batch_requests: int
    formats: dict[str, FormatRate]


def schedule_s(answers: list[int], prompt_tokens: int, widths: dict[Any, dict]) -> float:
    """llama.cpp's own time for a fan-out whose answers have these lengths: each stretch of
    steps at the speed ``llama-batched-bench`` generated at with that many sequences, and the
    prompts at its prompt speed with all of them (``widths``: its figures by width)."""
    speed = {int(w): figures for w, figures in widths.items()}
    lengths, seconds, done = sorted(answers), 0.0, 0
    for k, length in enumerate(lengths):
        running = len(lengths) - k
        seconds += (length - done) * running / speed[running]["tg_tok_s"]
        done = length
    return seconds + prompt_tokens / speed[len(lengths)]["pp_tok_s"]


class FanoutRun(Rate):
    answers: list[int]  # each answer's tokens, shortest first
    prompt_tokens: int  # counted; cached_tokens of them found in the engine's prompt cache
    cached_tokens: int = 0
    median_prompt_tokens: int
    start_s: float
    steady_tok_s: float
    steady_tok_s_min: float | None = None
    steady_tok_s_max: float | None = None


class FanoutWorkload(Measured):
    """The demo's fan-out against llama.cpp's own decoding of its schedule
    (:mod:`hpc_chat.bench.fanout`)."""

    repeats: int
    order: list[str]
    prompts: int
    hpc_chat: FanoutRun
    llama_batched_bench: NativeAtLength | None = None

    @property
    def schedule_tok_s(self) -> float | None:
        """llama.cpp's own tokens/s for the demo's answers, each width at its own speed."""
        native = self.llama_batched_bench
        if native is None or len(native.widths) < len(self.hpc_chat.answers):
            return None
        widths = {w: r.model_dump() for w, r in native.widths.items()}
        evaluated = self.hpc_chat.prompt_tokens - self.hpc_chat.cached_tokens
        return self.hpc_chat.tokens / schedule_s(self.hpc_chat.answers, evaluated, widths)

    @property
    def vs_schedule(self) -> float | None:
        """hpc_chat's tokens/s after its start / llama.cpp's for the same schedule."""
        ceiling = self.schedule_tok_s
        return None if ceiling is None else self.hpc_chat.steady_tok_s / ceiling
