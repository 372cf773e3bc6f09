"""The schema of ``results.json``: what the benchmark suite measured, typed.

The report (:mod:`hpc_chat.bench.report`) reads only these models, so a figure the suite does
not produce cannot appear in the report, and an older or hand-edited results file that lacks
one fails with the key that is missing. Every ``runs`` list keeps each repeat's raw numbers.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from hpc_chat.bench.rates import NativeAtLength, NativeBatched, Rate, ResultModel
from hpc_chat.bench.workloads import (
    CollabEqualWorkload,
    CollaborationWorkload,
    EmbeddingWorkload,
    EqualWorkload,
    FanoutWorkload,
    FormatsWorkload,
    MultiTurnWorkload,
    ScaleWorkload,
)


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
    # measured on its own (--only real) or with the suite: when, where, how often (older
    # results: the suite's, in meta)
    date: str | None = None
    machine: str | None = None
    cores: int | None = None
    repeats: int | None = None

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
    collaboration_equal: CollabEqualWorkload | None = None
    multiturn: MultiTurnWorkload | None = None
    formats: FormatsWorkload | None = None
    equal: EqualWorkload | None = None
    fanout: FanoutWorkload | None = None
