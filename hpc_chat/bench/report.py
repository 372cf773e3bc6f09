"""The benchmark report: ``docs/performance.md``, its plot, and the README's headline lines.

Written from the results alone (:class:`~hpc_chat.bench.results.BenchResults`): the wording is
in ``templates/*.md.j2``, every number and comparison comes from the measured figures.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from jinja2 import StrictUndefined
from jinja2.sandbox import SandboxedEnvironment

from hpc_chat.bench.results import BenchResults

README_START = "<!-- bench:start -->"
README_END = "<!-- bench:end -->"

TARGETS = {  # name: (description, bound, higher_is_better)
    "overhead_ratio": ("orchestration wall time / direct loop (64-token answers)", 1.05, False),
    "stub_p50_ms": ("per-task p50 with inference stubbed out (ms)", 5.0, False),
    "throughput_vs_direct": ("best aggregate tokens/s / direct sequential loop", 2.5, True),
    "single_stream_fraction": ("single-stream generation / memory-bandwidth ceiling", 0.5, True),
}
SERVER_TARGET = "best aggregate tokens/s / llama-server with 8 slots"
REAL_TARGETS = {  # the real workload: name: (description, bound, higher_is_better)
    "real_vs_direct": ("real workload: hpc-chat batch end to end / plain loop", 1.8, True),
    "real_vs_server": ("real workload: hpc-chat batch end to end / the best llama-server "
                       "(-np 8, -np 16)", 1.2, True),
    "real_vs_native": ("real workload: hpc-chat's gain / llama-batched-bench's gain at 8", 0.9,
                       True),
    "first_token_s": ("first streamed token on a warm worker (s)", 0.3, False),
}
REAL_DESCS = {desc for desc, _, _ in REAL_TARGETS.values()}
SCHEMA_TARGET = ("real workload with a json_schema: tokens/s after the start / without "
                 "one (same run)")
COLLAB_TARGET = ("3-agent synthesize: hpc-chat batch after its start / llama-server -np 8 "
                 "with each round's requests sent together")
COLLAB_EQUAL_TARGET = ("3-agent synthesize, every answer of a prompt one length on both: "
                       "hpc-chat batch after its start / llama-server -np 8, each round's "
                       "requests together")
EQUAL_TARGETS = {  # way: description; bound 1.25
    "open": "equal lengths: warm hpc-chat serve / the best llama-server, every request at once",
    "clients": "equal lengths: warm hpc-chat serve / the best llama-server, 8 clients"}
MULTITURN_TARGET = ("multi-turn: warm hpc-chat serve / the best llama-server (16 "
                    "conversations x 4 turns, whole history each request)")
FANOUT_TARGET = ("the demo's fan-out: hpc-chat batch after its start / llama.cpp's own time "
                 "for the same schedule (llama-batched-bench)")


@dataclass
class Verdict:
    desc: str
    value: float
    target: float
    higher: bool

    @property
    def bound(self) -> str:
        return f"{'≥' if self.higher else '≤'} {self.target:g}"

    @property
    def ok(self) -> bool:
        return self.value >= self.target if self.higher else self.value <= self.target

    def row(self) -> tuple[str, float, str, bool]:
        return self.desc, self.value, self.bound, self.ok


def typed(res: dict[str, Any] | BenchResults) -> BenchResults:
    return res if isinstance(res, BenchResults) else BenchResults.model_validate(res)


def _verdicts(r: BenchResults) -> list[Verdict]:
    measured = {"overhead_ratio": r.overhead.ratio, "stub_p50_ms": r.overhead.stubbed.p50_ms,
                "throughput_vs_direct": r.throughput.best.vs_direct,
                "single_stream_fraction": r.limit.fraction}
    out = [Verdict(desc, measured[key], bound, higher)
           for key, (desc, bound, higher) in TARGETS.items()]
    if r.throughput.llama_server:
        out.append(Verdict(SERVER_TARGET,
                           r.throughput.best.tok_s / r.throughput.llama_server.tok_s, 1, True))
    if r.real is not None:
        measured = {"real_vs_direct": r.real.vs_direct,
                    "first_token_s": r.real.first_token.first_token_s}
        if r.real.best_server:
            measured["real_vs_server"] = r.real.hpc_chat.tok_s / r.real.best_server[1].tok_s
        native = r.real.llama_batched_bench
        if native is not None and 1 in native.widths and 8 in native.widths:
            native_gain = native.widths[8].tok_s / native.widths[1].tok_s
            measured["real_vs_native"] = r.real.vs_direct / native_gain
        out = [Verdict(desc, measured[key], bound, higher)
               for key, (desc, bound, higher) in REAL_TARGETS.items() if key in measured] + out
    if r.schema_ is not None:
        out.append(Verdict(SCHEMA_TARGET, r.schema_.kept, 0.85, True))
    if r.collaboration is not None and r.collaboration.vs_concurrent is not None:
        out.append(Verdict(COLLAB_TARGET, r.collaboration.vs_concurrent, 1.2, True))
    if r.collaboration_equal is not None:
        out.append(Verdict(COLLAB_EQUAL_TARGET, r.collaboration_equal.vs_concurrent, 1.2, True))
    if r.fanout is not None and r.fanout.vs_schedule is not None:
        out.append(Verdict(FANOUT_TARGET, r.fanout.vs_schedule, 0.85, True))
    if r.multiturn is not None and r.multiturn.vs_best_server is not None:
        out.append(Verdict(MULTITURN_TARGET, r.multiturn.vs_best_server, 1.5, True))
    if r.equal is not None and r.equal.prompts_agree is not False:  # else not equal lengths
        out += [Verdict(desc, r.equal.vs_best_server(way), 1.25, True)
                for way, desc in EQUAL_TARGETS.items() if r.equal.vs_best_server(way)]
    return out


def verdicts(res: dict[str, Any] | BenchResults) -> list[tuple[str, float, str, bool]]:
    """(target, measured value, bound as text, met)."""
    return [v.row() for v in _verdicts(typed(res))]


def _env() -> SandboxedEnvironment:
    env = SandboxedEnvironment(undefined=StrictUndefined, keep_trailing_newline=True,
                               autoescape=False)
    env.filters["fmt"] = lambda value, spec: format(value, spec)
    return env


def _render(name: str, **values) -> str:
    text = resources.files("hpc_chat.bench").joinpath("templates", name).read_text()
    return _env().from_string(text).render(**values)


def profile_section(res: dict[str, Any] | BenchResults) -> list[str]:
    """Where batched decoding spends its time, from the engine's own counters."""
    r = typed(res)
    if r.profile is None:
        return []
    b = r.profile.batched
    alone = r.profile.single.ms_per_token_by_batch.get(1)
    per_token = {**b.ms_per_token_by_batch, **({1: alone} if alone else {})}
    native = r.throughput.llama_batched_bench
    text = _render("profile.md.j2", b=b, alone=alone, full=b.ms_per_token_by_batch.get(b.n_seq),
                   per_token=sorted(per_token.items()), native=native,
                   native_gain=native.gain() if native else None,
                   max_tokens=r.meta.max_tokens)
    return text.rstrip("\n").split("\n")


def markdown(res: dict[str, Any] | BenchResults, plot_name: str) -> str:
    r = typed(res)
    found = _verdicts(r)
    missed = [v for v in found if not v.ok]
    native = r.throughput.llama_batched_bench
    profile = "\n".join(profile_section(r))
    return _render("performance.md.j2", m=r.meta, o=r.overhead, t=r.throughput,
                   w=r.warm_start, s=r.slurm, s2=r.slurm_2n, lim=r.limit, plot_name=plot_name,
                   real=r.real, sch=r.schema_, emb=r.embeddings, scale=r.scale,
                   col=r.collaboration, ceq=r.collaboration_equal, mt=r.multiturn,
                   fmts=r.formats, eq=r.equal, fan=r.fanout,
                   verdicts=found, missed=missed,
                   profile=profile + "\n" if profile else "",
                   throughput_missed=any(v.desc == TARGETS["throughput_vs_direct"][0]
                                         for v in missed),
                   native_gain=native.gain() if native else None,
                   real_missed=any(v.desc in REAL_DESCS for v in missed),
                   equal_missed=any(v.desc in EQUAL_TARGETS.values() for v in missed),
                   fanout_missed=any(v.desc == FANOUT_TARGET for v in missed))


def readme_block(res: dict[str, Any] | BenchResults) -> str:
    r = typed(res)
    return _render("readme.md.j2", start=README_START, end=README_END, m=r.meta,
                   o=r.overhead, best=r.throughput.best, server=r.throughput.llama_server,
                   real=r.real).strip()


def plotting_problem() -> str | None:
    """Why no plot can be drawn here (matplotlib comes with the ``bench`` extra), or None."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return "matplotlib is not installed (pip install -e '.[bench]', or make bench)"
    return None


def plot(res: dict[str, Any] | BenchResults, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    r = typed(res)
    t, m = r.throughput, r.meta
    labels = ["direct loop"] + [c.label.replace(", ", "\n") for c in t.configs]
    values = [t.direct.tok_s] + [c.tok_s for c in t.configs]
    if t.llama_server:
        labels.append("llama-server\n8 slots")
        values.append(t.llama_server.tok_s)
    fig, ax = plt.subplots(figsize=(10, 4.8))
    bars = ax.bar(range(len(values)), values, color=["#888"] + ["#3a7"] * len(t.configs)
                  + ["#c84"] * (len(values) - len(t.configs) - 1))
    ax.axhline(r.limit.ceiling_tok_s, color="#c33", linestyle="--",
               label=f"single-stream ceiling ({r.limit.ceiling_tok_s:.0f} tok/s)")
    ax.set_xticks(range(len(values)), labels, fontsize=8)
    ax.set_ylabel("generated tokens / s")
    ax.set_title(f"{m.requests} chat requests, up to {m.max_tokens} tokens, {m.cores} cores "
                 f"(median of {m.repeats}), {m.date}\n{m.machine}", fontsize=9)
    for bar, v in zip(bars, values):
        ax.text(bar.get_x() + bar.get_width() / 2, v, f"{v:.0f}", ha="center", va="bottom",
                fontsize=8)
    ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(res: dict[str, Any] | BenchResults, results_dir: Path, docs_dir: Path,
                 readme: Path | None) -> list[Path]:
    r = typed(res)
    results_dir.mkdir(parents=True, exist_ok=True)
    docs_dir.mkdir(parents=True, exist_ok=True)
    out_json = results_dir / "results.json"
    out_json.write_text(json.dumps(res if isinstance(res, dict) else r.model_dump(), indent=2))
    png = docs_dir / "performance.png"
    problem = plotting_problem()
    if problem is None:
        plot(r, png)
    md = docs_dir / "performance.md"
    md.write_text(markdown(r, png.name if problem is None else None))
    written = [out_json, md] + ([png] if problem is None else [])
    if readme and readme.exists():
        text = readme.read_text()
        if README_START in text and README_END in text:
            before, rest = text.split(README_START, 1)
            after = rest.split(README_END, 1)[1]
            readme.write_text(before + readme_block(r) + after)
            written.append(readme)
    return written
