"""Corpus scale: ``hpc-chat batch`` over files of :data:`SIZES` lines, answered by the
zero-cost echo model, so that only hpc_chat's own machinery (reading, Parsl, micro-batches,
writing) is measured: lines per second end to end (the workers' start included) and the
driver's peak resident memory, which must not grow with the number of lines.

``hpc-chat bench --only scale`` measures this section alone; ``HPC_CHAT_BENCH_SCALE_LINES``
(``10000,100000,1000000``) chooses the sizes (a million lines takes about 20 minutes here).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from hpc_chat.bench.measure import machine_description

SIZES = (10_000, 100_000)
MODEL = "echo?tokens=4&token_s=0"
CORPUS_TASK_SIZE = 16  # the extra run's --task-size (docs/user-guide.md, corpus batches)
POLL_S = 0.25


def sizes() -> tuple[int, ...]:
    given = os.environ.get("HPC_CHAT_BENCH_SCALE_LINES")
    return tuple(int(n) for n in given.split(",")) if given else SIZES


def peak_mb(pid: int) -> float | None:
    """The process's peak resident memory so far (``VmHWM``), in MiB."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def scale_run(lines: int, work: Path, task_size: int | None = None) -> dict[str, Any]:
    """One ``hpc-chat batch`` of ``lines`` distinct prompts on the local site's workers, in
    tasks of the workflow's ``batch_size`` or of ``task_size`` requests."""
    source, output = work / f"in-{lines}.jsonl", work / f"out-{lines}.jsonl"
    with source.open("w") as fh:
        for i in range(lines):
            fh.write(json.dumps({"id": i, "prompt": f"prompt number {i}"}) + "\n")
    argv = ["batch", str(source), "-o", str(output), "--model", MODEL, "--server", "off",
            *(["--task-size", str(task_size)] if task_size else [])]
    wall, peak = _measured(argv, work, f"hpc-chat batch of {lines} lines")
    with output.open("rb") as fh:
        written = sum(1 for _ in fh)
    if written != lines:
        raise RuntimeError(f"hpc-chat batch wrote {written} lines for {lines}")
    # --resume over the finished output: every line is skipped, and the driver's memory
    # shows what its bookkeeping of the earlier answers costs (batch.outcomes).
    resume_s, resume_peak = _measured([*argv, "--resume"], work,
                                      f"hpc-chat batch --resume of {lines} lines")
    with output.open("rb") as fh:
        if sum(1 for _ in fh) != lines:
            raise RuntimeError("hpc-chat batch --resume wrote lines for answered prompts")
    source.unlink()
    output.unlink()
    return {"lines": lines, "task_size": task_size or default_task_size(),
            "task_size_given": task_size is not None, "wall_s": wall,
            "lines_s": lines / wall, "peak_rss_mb": peak, "resume_s": resume_s,
            "resume_peak_rss_mb": resume_peak}


def default_task_size() -> int:
    """The packaged workflow's ``performance.batch_size``: requests per task by default."""
    from hpc_chat.driver.workflow_config import load_workflow

    return load_workflow().settings.performance.batch_size


def _measured(argv: list[str], work: Path, what: str) -> tuple[float, float]:
    """Wall seconds and peak resident MiB of ``hpc-chat ARGV``."""
    env = {**os.environ, "HPC_CHAT_HOME": str(work / "home")}
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "hpc_chat", *argv], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    peak = 0.0
    while proc.poll() is None:
        peak = max(peak, peak_mb(proc.pid) or 0.0)
        time.sleep(POLL_S)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{what} failed: {proc.stderr.read()[-2000:]}")
    return wall, peak


def scale_workload(log: Callable[[str], None]) -> dict[str, Any]:
    runs = []
    with tempfile.TemporaryDirectory(prefix="hpc_chat-scale-") as tmp:
        # Every size with the packaged task size, then the largest up to 100,000 lines
        # again in the larger tasks a corpus of short answers would use.
        corpus = max((n for n in sizes() if n <= 100_000), default=None)
        for n, task_size in [*((n, None) for n in sizes()),
                             *([(corpus, CORPUS_TASK_SIZE)] if corpus else [])]:
            log(f"   hpc-chat batch, {n} lines, {MODEL}"
                + (f", --task-size {task_size}" if task_size else ""))
            runs.append(scale_run(n, Path(tmp), task_size))
            log(f"     {runs[-1]['lines_s']:.0f} lines/s, peak {runs[-1]['peak_rss_mb']:.0f} MiB")
    return {"model": MODEL, "date": time.strftime("%Y-%m-%d %H:%M"),
            "machine": machine_description(), "cores": len(os.sched_getaffinity(0)),
            "runs": runs}
