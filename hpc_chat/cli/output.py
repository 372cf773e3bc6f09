"""How results, conversations, agents and statistics are printed."""

from __future__ import annotations

import time
from typing import Any

import click
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from hpc_chat.cli.app import console, err_console


def render_result(ident: Any, result: dict[str, Any]):
    from rich.panel import Panel
    from rich.text import Text

    body = Text(result["response"] if result["ok"] else f"failed: {result['error']}")
    agents = ", ".join(result["agents"]) or "-"
    return Panel(body, title=Text(f"{ident}: {result['prompt']}"),
                 subtitle=f"{agents} · {result['latency_s']:.1f} s · "
                          f"{result['completion_tokens']} tokens",
                 title_align="left", subtitle_align="right")


def print_result(result: dict[str, Any], *, raw: bool = False) -> None:
    """The answer on stdout exactly as generated (several agents: one ``[agent]`` header line
    each); who answered, how long and how many tokens on stderr, unless ``raw``."""
    if not result["ok"]:
        err_console.print(f"[bold red]failed:[/] {escape(str(result['error']))}", highlight=False)
        return
    click.echo(result["response"])
    if raw:
        return
    cut = list(dict.fromkeys(r["agent"] for r in result["responses"]
                             if not r.get("error") and r.get("finish_reason") == "length"))
    detail = ", ".join(f"{r['agent']}" + (" (cached)" if r.get("cached") else "")
                       for r in result["responses"] if not r.get("error"))
    if result.get("rounds"):  # collaborating agents: who answered in each round, in order
        detail = f"{result['mode']}: " + " → ".join(
            ", ".join(a["agent"] for a in r["answers"] if not a.get("error"))
            for r in result["rounds"])
    err_console.print(f"[dim]{detail} · {result['latency_s']:.2f} s · "
                      f"{result['completion_tokens']} tokens[/]", highlight=False)
    if cut:
        err_console.print(f"[yellow]note:[/] the answer of {', '.join(cut)} stopped at the "
                          f"max_tokens limit (raise it with --max-tokens)", highlight=False)
    for r in result["responses"]:
        if r.get("error"):  # the others answered: say which agent did not, and why
            err_console.print(f"[yellow]note:[/] {escape(str(r.get('agent')))} did not answer: "
                              f"{escape(str(r['error']))}", highlight=False)


def print_agents(workflow) -> None:
    table = Table("agent", "temperature", "threshold", "keywords", "description")
    for agent in workflow.agents.values():
        c = agent.config.config
        table.add_row(Text(agent.name), str(c.temperature),
                      str(c.collaboration.delegation_threshold),
                      ", ".join(c.collaboration.specialization_keywords), agent.description)
    console.print(table)


def print_conversation(messages: list[dict[str, Any]]) -> None:
    if not messages:
        console.print("[dim](no messages)[/]")
    for m in messages:
        who = "you" if m["role"] == "user" else (m.get("agent") or "assistant")
        stamp = time.strftime("%Y-%m-%d %H:%M", time.localtime(m["created_at"]))
        console.print(Text.assemble((who, "bold"), " ", (stamp, "dim")))
        console.print(m["content"], highlight=False, markup=False)
        console.print()


def print_stats(perf: dict[str, Any], parsl_stats: dict[str, Any] | None = None,
                title: str = "Statistics", *, to_stdout: bool = False) -> None:
    """The statistics table: on stderr beside a run's answers, on stdout for ``stats``."""
    table = Table("metric", "value", title=Text(title))
    rows = [
        ("requests (ok / failed)", f"{perf['successful_requests']} / {perf['failed_requests']}"),
        ("response time avg / min / max", f"{perf['avg_response_time']:.2f} / "
                                          f"{perf['min_response_time']:.2f} / "
                                          f"{perf['max_response_time']:.2f} s"),
        ("response time p50 / p95", f"{perf['p50_response_time']:.2f} / "
                                    f"{perf['p95_response_time']:.2f} s"),
        ("throughput", f"{perf['throughput']:.2f} req/s"),
        ("generated tokens", f"{perf['completion_tokens']} ({perf['tokens_per_s']:.1f} tok/s)"),
        ("wall time", f"{perf['wall_time']:.2f} s"),
    ]
    if "cache_hits" in perf:
        rows.append(("cache hits", str(perf["cache_hits"])))
    if perf.get("model_loads"):
        rows.append(("model loads", str(perf["model_loads"])))
    for agent, n in sorted(perf.get("agent_answers", {}).items()):
        rows.append((f"answers by {agent}", str(n)))
    if parsl_stats:
        rows += [("parsl workers", str(parsl_stats.get("active_workers", 0))),
                 ("parsl blocks", str(parsl_stats.get("blocks", 0))),
                 ("parsl tasks done / failed / retried",
                  f"{parsl_stats.get('completed_tasks', 0)} / "
                  f"{parsl_stats.get('failed_tasks', 0)} / "
                  f"{parsl_stats.get('retried_tasks', 0)}")]
    for k, v in rows:
        table.add_row(k, Text(v))
    (console if to_stdout else err_console).print(table)


def rule(title: str) -> None:
    """A section heading: a full-width rule on a terminal, one short line in a pipe."""
    if console.is_terminal:
        console.rule(Text(title))
    else:
        click.echo(f"--- {title} ---")


def warn_placeholders(profile, before: str) -> None:
    """List the profile's placeholder values still to edit (on stderr)."""
    for problem in profile.placeholders():
        err_console.print(f"[yellow]to edit before {before}:[/] {escape(problem)}", highlight=False)
