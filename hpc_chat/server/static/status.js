// The status page: what only hpc_chat knows about the allocation, from /v1/status every two
// seconds: each pilot job's scheduler state (with the reason it waits and when the scheduler
// expects it to start), its nodes and workers, the engines and their load, requests, tokens
// per second over time, and the Batch API's batches with their progress and time left.
"use strict";

(() => {
  const el = (...a) => HPC.el(...a);
  const $ = (id) => document.getElementById(id);
  const SVG = "http://www.w3.org/2000/svg";

  function rows(table, list, cells, empty) {
    const body = HPC.clear(table.querySelector("tbody"));
    if (!list.length) {
      const span = table.querySelectorAll("th").length;
      body.append(el("tr", {}, el("td", {colspan: span, class: "empty"}, empty)));
      return;
    }
    for (const item of list) {
      body.append(el("tr", {}, ...cells(item).map((c) => el("td", {}, c))));
    }
  }

  function summary(s) {
    const dl = HPC.clear($("summary"));
    const add = (k, v) => dl.append(el("dt", {}, k), el("dd", {}, v));
    add("state", s.state);
    if (s.error) add("why", s.error);
    add("site", s.site || "local");
    add("workers", s.workers);
    add("requests running", `${s.requests.running} (at most ${s.requests.max_queue})`);
    add("Parsl tasks pending", s.requests.parsl_tasks_pending ?? "-");
    add("tokens/s, last minute", s.tokens_per_s_last_minute);
    add("up", HPC.duration(s.uptime_s));
  }

  function phase(name) {
    return el("span", {class: `badge ${String(name).toLowerCase()}`}, name);
  }

  function chart(points) {
    const box = HPC.clear($("chart"));
    if (!points.length) {
      box.append(el("p", {class: "empty"}, "no answers yet"));
      return;
    }
    const w = 600, h = 140, pad = 28;
    const max = Math.max(1, ...points.map((p) => p[1]));
    const t0 = points[0][0], t1 = Math.max(points[points.length - 1][0], t0 + 1);
    const x = (t) => pad + (w - 2 * pad) * (t - t0) / (t1 - t0);
    const y = (v) => h - pad - (h - 2 * pad) * v / max;
    const svg = document.createElementNS(SVG, "svg");
    svg.setAttribute("viewBox", `0 0 ${w} ${h}`);
    svg.setAttribute("class", "chart");
    svg.setAttribute("role", "img");
    const line = document.createElementNS(SVG, "polyline");
    line.setAttribute("points", points.map((p) => `${x(p[0]).toFixed(1)},${y(p[1]).toFixed(1)}`)
      .join(" "));
    line.setAttribute("class", "line");
    const axis = document.createElementNS(SVG, "path");
    axis.setAttribute("d", `M${pad},${pad / 2} V${h - pad} H${w - pad}`);
    axis.setAttribute("class", "axis");
    const label = (text, lx, ly, anchor) => {
      const t = document.createElementNS(SVG, "text");
      t.setAttribute("x", lx);
      t.setAttribute("y", ly);
      t.setAttribute("text-anchor", anchor);
      t.textContent = text;
      return t;
    };
    svg.append(axis, line, label(`${max.toFixed(1)} tok/s`, pad + 4, pad / 2 + 10, "start"),
               label(`${HPC.duration(t1 - t0)} (10 s points)`, w - pad, h - 8, "end"));
    box.append(svg);
  }

  function progress(b) {
    const done = b.completed + b.failed;
    const bar = el("progress", {max: Math.max(b.total, 1), value: done});
    return el("span", {class: "progress"}, bar, ` ${done} / ${b.total}`);
  }

  async function refresh() {
    let s;
    try {
      s = await HPC.json("v1/status");
    } catch (e) {
      HPC.showState("unreachable");
      return;
    }
    HPC.showState(s.state);
    summary(s);
    const now = Date.now() / 1000;
    rows($("blocks"), s.blocks, (b) => [b.job_id, b.block, phase(b.phase), b.state, b.managers,
                                        b.workers, b.tasks],
         "no pilot job (workers on this node, or none yet)");
    rows($("engines"), s.engines || [], (e) => [
      e.host, e.kind === "node" ? `node engine ${e.pid}` : "in the worker", e.model,
      e.block ?? "-", e.slots ? `${e.running} of ${e.slots}` : "-", e.waiting ?? "-",
      e.answers, HPC.ago(now - e.last_answer)], "no engine has answered yet");
    chart(s.tokens_per_s_history || []);
    rows($("batches"), s.batches || [], (b) => [b.id, b.status, progress(b), b.failed,
                                                 b.requests_per_s, HPC.duration(b.eta_s)],
         "no batch running");
  }

  document.addEventListener("DOMContentLoaded", () => {
    HPC.bindLogout();
    refresh();
    setInterval(refresh, 2000);
  });
})();
