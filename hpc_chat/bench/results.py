"""The schema of ``results.json``: what the benchmark suite measured, typed.

The report (:mod:`hpc_chat.bench.report`) reads only these models, so a figure the suite does
not produce cannot appear in the report, and an older or hand-edited results file that lacks
one fails with the key that is missing. Every ``runs`` list keeps each repeat's raw numbers.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from hpc_chat.bench.rates import Measured, Rate, ResultModel, TurnsRate


class Meta(ResultModel):
    date: str
    cores: int
    repeats: int
    requests: int
    overhead_requests: int
    max_tokens: int
    model_bytes: int
    machine: str = "an unrecorded machine"  # CPU model and host, as the suite saw them


class WorkflowRate(Rate):
    first_latency_s: float | None = None
    steady_latency_s: float | None = None
    model_loads: float | None = None
    workers_seen: float | None = None
    blocks: float | None = None


class Config(WorkflowRate):
    workers: int
    threads: int
    batch: int
    vs_direct: float

    @property
    def label(self) -> str:
        mode = f"batched x{self.batch}" if self.batch > 1 else "unbatched"
        return f"{self.workers} worker x {self.threads} thread, {mode}"


class Stubbed(ResultModel):
    p50_ms: float
    p95_ms: float
    tasks_s: float


class Overhead(ResultModel):
    direct: Rate
    workflow: WorkflowRate
    ratio: float
    per_request_ms: float
    stubbed: Stubbed


class NativeWidth(ResultModel):
    tg_tok_s: float
    pp_tok_s: float
    tok_s: float


class NativeBatched(ResultModel):
    """llama.cpp's ``llama-batched-bench``: figures by number of sequences."""

    prompt_tokens: int
    widths: dict[int, NativeWidth]
    runs: list[dict[str, Any]] = Field(default_factory=list)

    def gain(self) -> tuple[int, float] | None:
        """The best width and its end-to-end gain over one sequence."""
        if 1 not in self.widths or len(self.widths) < 2:
            return None
        top = max(self.widths, key=lambda k: self.widths[k].tok_s)
        return top, self.widths[top].tok_s / self.widths[1].tok_s


class Throughput(ResultModel):
    direct: Rate
    configs: list[Config]
    llama_server: Rate | None = None
    llama_batched_bench: NativeBatched | None = None
    llama_server_note: str | None = None

    @property
    def best(self) -> Config:
        return max(self.configs, key=lambda c: c.tok_s)


class Decode(ResultModel):
    """The batched engine's own counters (:class:`hpc_chat.llm.profile.DecodeProfile`)."""

    wall_s: float
    decode_s: float
    sample_s: float
    prefix_s: float
    prefix_tokens: int
    prompt_tokens: int
    generated_tokens: int
    n_seq: int
    tok_s: float
    ms_per_token_by_batch: dict[int, float]
    passes_per_step: float | None = None  # runs of consecutive sequence ids (older: absent)
    moves: int | None = None  # sequences moved down to close a gap
    slots: dict | None = None  # the slot cap and tokens/s per batch size (older: absent)

    @property
    def other_s(self) -> float:
        return self.wall_s - self.decode_s - self.prefix_s - self.sample_s


class Profile(ResultModel):
    batched: Decode
    single: Decode


class WarmStart(ResultModel):
    first_latency_s: float
    steady_latency_s: float
    model_loads_per_worker: float


class SlurmRate(WorkflowRate):
    config: list[int]
    vs_local: float


class TwoNodeRate(WorkflowRate):
    """The same batch through one 2-node pilot job (one worker pool and engine per node)."""

    hosts_seen: float
    engines_seen: float
    one_node: WorkflowRate  # the same per-node setup in a 1-node pilot job, same run


class Limit(ResultModel):
    copy_gb_s: float
    ceiling_tok_s: float
    single_stream_tok_s: float
    fraction: float


class BatchRun(Rate):
    """``hpc-chat batch`` end to end (:func:`hpc_chat.bench.suite.hpc_chat_batch_run`)."""

    start_s: float
    steady_tok_s: float
    median_answer_tokens: float
    min_answer_tokens: float
    max_answer_tokens: float
    engines: float
    valid_fraction: float | None = None  # answers with a format: the share that validated


class LoopRate(Rate):
    median_answer_tokens: float


class ServerRate(Rate):
    server_per_request_tok_s: float = 0.0


class FirstToken(ResultModel):
    first_token_s: float
    runs: list[dict[str, Any]] = Field(default_factory=list)


class NativeAtLength(NativeBatched):
    generated_tokens: int


class RealWorkload(ResultModel):
    """The headline case: the packaged agent's own settings and natural answer lengths."""

    requests: int
    agent: str
    max_tokens: int
    hpc_chat: BatchRun
    direct: LoopRate
    first_token: FirstToken
    llama_server: dict[int, ServerRate] = Field(default_factory=dict)
    hpc_chat_serve: dict[int, ServerRate] = Field(default_factory=dict)  # by concurrent clients
    llama_batched_bench: NativeAtLength | None = None
    order: list[str] = Field(default_factory=list)  # the runs' ABBA order (older: not recorded)

    @property
    def best_server(self) -> tuple[int, ServerRate] | None:
        """llama-server's best configuration here (its slots, its figures): the peer to beat."""
        return max(self.llama_server.items(), key=lambda kv: kv[1].tok_s, default=None)

    @property
    def vs_direct(self) -> float:
        return self.hpc_chat.tok_s / self.direct.tok_s


class SchemaWorkload(ResultModel):
    """The real workload with a ``json_schema`` (:mod:`hpc_chat.bench.schema`)."""

    requests: int
    agent: str
    date: str
    machine: str
    repeats: int = 3
    plain: BatchRun
    schema_: BatchRun = Field(alias="schema")
    llama_server_plain: Rate | None = None
    llama_server: Rate | None = None

    @property
    def kept(self) -> float:
        """Tokens/s with the schema / without it, both counted from the first request on a
        worker (1.0: the schema costs nothing). The start (workers, engine, model load) is the
        same with or without a schema, and answers under a schema are shorter, so counting it
        would charge the schema for a start it does not change."""
        return self.schema_.steady_tok_s / self.plain.steady_tok_s

    @property
    def kept_end_to_end(self) -> float:
        """The same ratio with the start counted in both."""
        return self.schema_.tok_s / self.plain.tok_s


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
    hpc_chat: CollabRate
    concurrent: CollabRate | None = None
    sequential: CollabRate | None = None
    quality: Quality

    @property
    def vs_concurrent(self) -> float | None:
        """hpc-chat's tokens/s after its start / the concurrent client's on a warm server."""
        if self.concurrent is None:
            return None
        return (self.hpc_chat.steady_tok_s or self.hpc_chat.tok_s) / self.concurrent.tok_s


class MultiTurnWorkload(Measured):
    """Conversations, each request with its whole history (:mod:`hpc_chat.bench.multiturn`)."""

    conversations: int
    turns: int
    repeats: int
    order: list[str]
    system_info: str = ""  # llama_print_system_info(): the CPU features llama.cpp uses
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


class BenchResults(ResultModel):
    meta: Meta
    real: RealWorkload | None = None
    overhead: Overhead
    throughput: Throughput
    warm_start: WarmStart
    slurm: SlurmRate | None = None
    slurm_2n: TwoNodeRate | None = None
    limit: Limit
    profile: Profile | None = None
    schema_: SchemaWorkload | None = Field(None, alias="schema")
    embeddings: EmbeddingWorkload | None = None
    scale: ScaleWorkload | None = None
    collaboration: CollaborationWorkload | None = None
    multiturn: MultiTurnWorkload | None = None
    formats: FormatsWorkload | None = None
    equal: EqualWorkload | None = None
