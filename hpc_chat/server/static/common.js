// What every page of hpc_chat uses: requests to this server (relative URLs, so the pages
// work under a proxy's path prefix such as Open OnDemand's /rnode/HOST/PORT/), and DOM
// building that only ever sets text (nothing received is parsed as HTML).
"use strict";

const HPC = {
  // Where this server's routes are, as the page was given it: "./", or the proxy's path
  // ("/rnode/HOST/PORT/") when serve has --root-path. Every request is made from it.
  root: (document.querySelector('meta[name="hpc-chat-root"]') || {}).content || "./",

  // A request to this server's API (a path such as "v1/models") with the session cookie. Changes carry the X-HPC-Chat
  // header: the server refuses a change that only has the cookie (a cross-site form).
  async api(path, options = {}) {
    const headers = Object.assign({"X-HPC-Chat": "1"}, options.headers || {});
    if (options.body !== undefined && !headers["Content-Type"]) {
      headers["Content-Type"] = "application/json";
    }
    const response = await fetch(HPC.root + path, Object.assign({}, options, {
      headers, credentials: "same-origin"}));
    if (response.status === 401) {
      HPC.loggedOut();
    }
    return response;
  },

  async json(path, options) {
    const response = await HPC.api(path, options);
    let body = null;
    try {
      body = await response.json();
    } catch (e) {
      body = null;
    }
    if (!response.ok) {
      const message = body && body.error ? body.error.message : response.statusText;
      throw new Error(`${response.status}: ${message}`);
    }
    return body;
  },

  // el("div", {class: "x"}, "text", otherNode): attributes by setAttribute, children as text
  // nodes or nodes; never innerHTML.
  el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key.startsWith("on")) {
        node.addEventListener(key.slice(2), value);
      } else {
        node.setAttribute(key, value === true ? "" : String(value));
      }
    }
    for (const child of children) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  },

  clear(node) {
    while (node.firstChild) node.removeChild(node.firstChild);
    return node;
  },

  // What every page's header does: the server's stage as a badge, and the log-out button.
  showState(stage) {
    const badge = document.getElementById("server-state");
    badge.textContent = stage;
    badge.className = `badge ${stage}`;
  },

  bindLogout() {
    document.getElementById("logout").addEventListener("click", async () => {
      await HPC.api("logout", {method: "POST"});
      location.replace(HPC.root + "login");
    });
  },

  loggedOut() {
    const banner = document.getElementById("login-needed");
    if (banner) banner.hidden = false;
  },

  // Copy text: the Clipboard API where the page is a secure context (https, localhost),
  // else a selected, hidden textarea (plain http through a tunnel to another name).
  async copy(text, button) {
    let done = false;
    if (navigator.clipboard && window.isSecureContext) {
      try {
        await navigator.clipboard.writeText(text);
        done = true;
      } catch (e) {
        done = false;
      }
    }
    if (!done) {
      const area = HPC.el("textarea", {class: "offscreen", readonly: true});
      area.value = text;
      document.body.append(area);
      area.select();
      try {
        done = document.execCommand("copy");
      } catch (e) {
        done = false;
      }
      area.remove();
    }
    if (button) {
      const label = button.textContent;
      button.textContent = done ? "copied" : "copy failed";
      setTimeout(() => { button.textContent = label; }, 1200);
    }
  },

  ago(seconds) {
    if (seconds < 60) return `${Math.round(seconds)} s ago`;
    if (seconds < 3600) return `${Math.round(seconds / 60)} min ago`;
    return `${(seconds / 3600).toFixed(1)} h ago`;
  },

  duration(seconds) {
    if (seconds === null || seconds === undefined) return "-";
    if (seconds < 90) return `${Math.round(seconds)} s`;
    if (seconds < 5400) return `${Math.round(seconds / 60)} min`;
    return `${(seconds / 3600).toFixed(1)} h`;
  },
};
