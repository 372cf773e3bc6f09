"""The shapes every section of ``results.json`` shares (:mod:`hpc_chat.bench.results`): a
measured run, where a section was measured, and a run compared with peers over repeats."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class ResultModel(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True, serialize_by_alias=True)


class Rate(ResultModel):
    """One measured run shape (medians over the repeats)."""

    wall_s: float
    tok_s: float
    req_s: float
    tokens: int | None = None
    runs: list[dict[str, Any]] = Field(default_factory=list)


class Measured(ResultModel):
    """Where and when a workload section was measured (each section is run on its own, with
    ``--only``, so each says so itself)."""

    date: str
    machine: str
    cores: int


class TurnsRate(Rate):
    prompt_tokens: int
    tok_s_min: float
    tok_s_max: float
    # llama-server's busy slots per decode (its /metrics), or the sequences generating per
    # decode call of hpc_chat's node engines and llama.cpp's passes over the weights per call
    busy_slots_per_decode: float | None = None
    passes_per_decode: float | None = None
    lengths_match: bool | None = None  # each answer as long as asked (None: not recorded)


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


class NativeAtLength(NativeBatched):
    generated_tokens: int
