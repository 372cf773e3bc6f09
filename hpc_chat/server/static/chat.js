// The chat page: pick an agent (or "auto", routed to several), stream the answer as it is
// generated, stop it, and find past conversations again (stored by the server under the
// X-Conversation-Id this page sends: each new message goes on from the stored turns).
"use strict";

(() => {
  const el = (...a) => HPC.el(...a);
  const $ = (id) => document.getElementById(id);
  let conversation = null;  // the id of the conversation shown
  let running = null;  // the AbortController of the answer being streamed

  function newId() {
    const bytes = new Uint8Array(12);
    crypto.getRandomValues(bytes);
    return "web-" + Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  }

  function userTurn(text) {
    const turn = el("div", {class: "turn user"}, el("div", {class: "who"}, "you"),
                    el("div", {class: "text"}, text));
    $("messages").append(turn);
    return turn;
  }

  // One panel per agent: its name, the rendered text, a copy button.
  function answerPanel(agent) {
    const body = el("div", {class: "text"});
    const copy = el("button", {class: "copy", type: "button"}, "copy");
    const panel = el("div", {class: "panel"},
                     el("div", {class: "who"}, el("span", {class: "agent"}, agent || "…"),
                        copy),
                     body);
    panel.state = {text: ""};
    copy.addEventListener("click", () => HPC.copy(panel.state.text, copy));
    panel.show = (text) => {
      panel.state.text = text;
      HPC.clear(body).append(Render.markdown(text));
    };
    panel.name = (name) => { panel.querySelector(".agent").textContent = name; };
    return panel;
  }

  function answerTurn() {
    const panels = el("div", {class: "panels"});
    const note = el("div", {class: "note"});
    const turn = el("div", {class: "turn assistant"}, panels, note);
    $("messages").append(turn);
    return {turn, panels, note};
  }

  function scrollDown() {
    const box = $("messages");
    box.scrollTop = box.scrollHeight;
  }

  async function loadModels() {
    const select = $("model");
    try {
      const models = await HPC.json("v1/models");
      HPC.clear(select);
      for (const m of models.data) {
        const label = m.id === "auto" ? "auto (routed to the agents)" : m.id;
        select.append(el("option", {value: m.id, title: (m.hpc_chat || {}).description},
                         label));
      }
      select.value = "auto";
    } catch (e) {
      $("server-state").textContent = "no models";
    }
  }

  async function loadState() {
    try {
      HPC.showState((await HPC.json("v1/status")).state);
    } catch (e) {
      HPC.showState("unreachable");
    }
  }

  async function loadConversations() {
    const list = $("conversations");
    let found;
    try {
      found = await HPC.json("v1/conversations");
    } catch (e) {
      return;
    }
    HPC.clear(list);
    for (const c of found.data) {
      const item = el("li", {class: c.id === conversation ? "current" : null},
                      el("a", {href: "#" + encodeURIComponent(c.id), title: c.id,
                               "data-id": c.id}, c.title));
      list.append(item);
    }
  }

  async function openConversation(id) {
    if (running) running.abort();
    let found;
    try {
      found = await HPC.json("v1/conversations/" + encodeURIComponent(id));
    } catch (e) {
      HPC.clear($("messages")).append(el("div", {class: "note error"},
                                         `could not open the conversation: ${e.message}`));
      return;
    }
    conversation = id;
    HPC.clear($("messages"));
    let panels = null;  // the agents of one routed answer, side by side
    for (const m of found.messages) {
      if (m.role === "user") {
        userTurn(m.content);
        panels = null;
      } else if (m.role === "assistant") {
        if (!panels) panels = answerTurn().panels;
        for (const [agent, text] of byAgent(m.content, m.agent)) {
          const panel = answerPanel(agent);
          panel.show(text);
          panels.append(panel);
        }
      }
    }
    scrollDown();
    loadConversations();
  }

  // A stored routed answer is one turn, each agent's text under an "[agent]" line (as the
  // server joins them, docs/agents.md): a panel each again.
  function byAgent(content, agents) {
    const names = (agents || "").split(",").filter(Boolean);
    if (names.length < 2) return [[agents || "assistant", content]];
    const parts = [];
    let current = null;
    for (const line of content.split("\n")) {
      const head = /^\[([^\]]+)\]$/.exec(line);
      if (head && names.includes(head[1])) {
        current = [head[1], []];
        parts.push(current);
      } else if (current) {
        current[1].push(line);
      } else {
        return [[agents, content]];  // not in that shape: shown whole
      }
    }
    return parts.map(([agent, lines]) => [agent, lines.join("\n").trim()]);
  }

  // OpenAI's server-sent events, read from the response body as they arrive.
  async function* events(response) {
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const {value, done} = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, {stream: true}).replace(/\r\n?/g, "\n");
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        // An event's data lines are one value, joined by newlines (the SSE format).
        const data = block.split("\n").filter((line) => line.startsWith("data:"))
          .map((line) => line.slice(5).replace(/^ /, "")).join("\n");
        if (!data) continue;
        if (data.trim() === "[DONE]") return;
        yield JSON.parse(data);
      }
    }
  }

  async function ask(question) {
    const model = $("model").value || "auto";
    if (!conversation) conversation = newId();
    userTurn(question);
    const {panels, note} = answerTurn();
    const first = answerPanel(model === "auto" ? "…" : model);
    panels.append(first);
    scrollDown();
    running = new AbortController();
    $("stop").disabled = false;
    $("send").disabled = true;
    let text = "";
    let pending = false;
    let finished = false;
    // A routed answer: each agent's text in its own panel as it grows (the first panel is
    // the first agent's).
    const agents = new Map();
    const paint = () => {
      pending = false;
      if (agents.size) {
        for (const [, a] of agents) a.panel.show(a.text);
      } else {
        first.show(text);
      }
      scrollDown();
    };
    const later = () => {
      if (!pending) {
        pending = true;
        requestAnimationFrame(paint);
      }
    };
    try {
      const response = await HPC.api("v1/chat/completions", {
        method: "POST", signal: running.signal,
        headers: {"X-Conversation-Id": conversation, "X-HPC-Chat-Agents": "stream"},
        body: JSON.stringify({model, stream: true,
                              messages: [{role: "user", content: question}]}),
      });
      if (!response.ok) {
        let message = response.statusText;
        try {
          message = (await response.json()).error.message;
        } catch (e) { /* not JSON */ }
        throw new Error(message);
      }
      for await (const event of events(response)) {
        if (event.error) throw new Error(event.error.message);
        const piece = event.hpc_chat_agent;
        if (piece) {
          if (!agents.has(piece.agent)) {
            const panel = agents.size ? answerPanel(piece.agent) : first;
            panel.name(piece.agent);
            if (agents.size) panels.append(panel);
            agents.set(piece.agent, {panel, text: ""});
          }
          const a = agents.get(piece.agent);
          a.text = piece.restart ? "" : a.text + (piece.content || "");
          later();
          continue;
        }
        const choice = (event.choices || [])[0];
        if (choice && choice.delta && choice.delta.content) {
          text += choice.delta.content;
          if (!agents.size) later();
        }
        if (choice && choice.finish_reason) {
          finished = true;
          pending = false;
          if (!agents.size) first.show(text);
          const who = ((event.hpc_chat || {}).agents || []).map((a) => a.agent);
          if (event.hpc_chat_answers) {  // several agents: a panel each
            HPC.clear(panels);
            for (const a of event.hpc_chat_answers) {
              const panel = answerPanel(a.agent);
              panel.show(a.error ? `(failed: ${a.error})` : a.content);
              panels.append(panel);
            }
          } else if (who.length) {
            first.name(who.join(", "));
          }
          note.textContent = choice.finish_reason === "length" ? "cut at max_tokens" : "";
        }
      }
      if (!finished) throw new Error("the connection ended before the answer did");
    } catch (e) {
      if (e.name === "AbortError") {
        note.textContent = "stopped";
      } else {
        note.textContent = `error: ${e.message}`;
        note.classList.add("error");
      }
      paint();
    } finally {
      running = null;
      $("stop").disabled = true;
      $("send").disabled = false;
      loadConversations();
    }
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("ask").addEventListener("submit", (event) => {
      event.preventDefault();
      const question = $("question").value.trim();
      if (!question || running) return;
      $("question").value = "";
      ask(question);
    });
    $("question").addEventListener("keydown", (event) => {
      if (event.key === "Enter" && !event.shiftKey) {
        event.preventDefault();
        $("ask").requestSubmit();
      }
    });
    $("stop").addEventListener("click", () => { if (running) running.abort(); });
    HPC.bindLogout();
    $("new-conversation").addEventListener("click", () => {
      if (running) running.abort();
      conversation = null;
      HPC.clear($("messages"));
      loadConversations();
      $("question").focus();
    });
    $("conversations").addEventListener("click", (event) => {
      const link = event.target.closest("a[data-id]");
      if (!link) return;
      event.preventDefault();
      openConversation(link.getAttribute("data-id"));
    });
    loadModels();
    loadState();
    loadConversations();
    setInterval(loadState, 5000);
  });
})();
