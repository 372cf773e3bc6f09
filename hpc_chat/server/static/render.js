// Markdown to DOM, safely: a model's answer is parsed into blocks (code fences, headings,
// lists, quotes, paragraphs) and inline spans (code, bold, italics, links), and each piece is
// made with createElement and text nodes. No string from the answer is ever parsed as HTML,
// so "<script>" or "<img onerror=...>" in an answer is shown as the text it is. Links are
// kept only for http(s) URLs, and open in a new tab without a referrer or an opener.
"use strict";

const Render = (() => {
  const el = (...a) => HPC.el(...a);

  function safeHref(url) {
    try {
      const parsed = new URL(url, "https://invalid.example/");
      if ((parsed.protocol === "https:" || parsed.protocol === "http:") &&
          /^https?:\/\//i.test(url)) {
        return parsed.href;
      }
    } catch (e) {
      return null;
    }
    return null;
  }

  // Inline spans, left to right: `code` (a run of backticks closed by a run of the same
  // length), **bold**, *italics*, [text](http(s) URL). Found by scanning, not by a regular
  // expression: a model's output can be anything, and a backtracking pattern on a long run of
  // backticks or brackets would freeze the page. Each closing mark is looked for within
  // REACH characters, so the work stays linear in the text (times REACH at worst).
  const REACH = 2000;
  const LONGEST = 100000;  // characters of one paragraph parsed for spans; the rest as text

  function closing(text, mark, from) {
    const at = text.indexOf(mark, from);
    return at >= 0 && at - from <= REACH ? at : -1;
  }

  function backticks(text, at) {
    let n = 0;
    while (text[at + n] === "`") n += 1;
    return n;
  }

  function inline(text, parent) {
    if (text.length > LONGEST) {
      parent.append(document.createTextNode(text));
      return parent;
    }
    let plain = "";
    const flush = () => {
      if (plain) parent.append(document.createTextNode(plain));
      plain = "";
    };
    let i = 0;
    while (i < text.length) {
      const c = text[i];
      if (c === "`") {
        const n = backticks(text, i);
        let from = i + n;
        let end = -1;
        while (from < text.length && from - i <= REACH) {
          const at = text.indexOf("`", from);
          if (at < 0 || at - i > REACH) break;
          const m = backticks(text, at);
          if (m === n) {
            end = at;
            break;
          }
          from = at + m;
        }
        if (end > i + n) {
          flush();
          parent.append(el("code", {}, text.slice(i + n, end)));
          i = end + n;
        } else {
          plain += text.slice(i, i + n);
          i += n;
        }
        continue;
      }
      if (c === "*" && text[i + 1] === "*") {
        const end = closing(text, "**", i + 2);
        if (end > i + 2) {
          flush();
          inline(text.slice(i + 2, end), parent.appendChild(el("strong")));
          i = end + 2;
          continue;
        }
      } else if (c === "*" && text[i + 1] && !/\s/.test(text[i + 1])) {
        const end = closing(text, "*", i + 1);
        if (end > i + 1 && text[end + 1] !== "*") {
          flush();
          inline(text.slice(i + 1, end), parent.appendChild(el("em")));
          i = end + 1;
          continue;
        }
      } else if (c === "[") {
        const label = closing(text, "](", i + 1);
        const end = label > i + 1 ? closing(text, ")", label + 2) : -1;
        const url = end > 0 ? text.slice(label + 2, end) : "";
        const href = url && !/\s/.test(url) && !text.slice(i + 1, label).includes("[")
          ? safeHref(url) : null;
        if (href) {
          flush();
          inline(text.slice(i + 1, label), parent.appendChild(
            el("a", {href, target: "_blank", rel: "noopener noreferrer"})));
          i = end + 1;
          continue;
        }
      }
      plain += c;
      i += 1;
    }
    flush();
    return parent;
  }

  function codeBlock(lang, lines) {
    const code = lines.join("\n");
    const button = el("button", {class: "copy", type: "button"}, "copy");
    button.addEventListener("click", () => HPC.copy(code, button));
    return el("div", {class: "code"},
              el("div", {class: "code-head"}, el("span", {}, lang || "text"), button),
              el("pre", {}, el("code", {}, code)));
  }

  // The whole answer; an unclosed fence (an answer still streaming) is a code block so far.
  function markdown(text) {
    const root = el("div", {class: "md"});
    const lines = String(text).replace(/\r\n?/g, "\n").split("\n");
    let i = 0;
    while (i < lines.length) {
      const line = lines[i];
      const fence = /^(`{3,}|~{3,})\s*([\w+#.-]*)$/.exec(line.trim());
      if (fence) {
        const body = [];
        i += 1;
        while (i < lines.length && !lines[i].trim().startsWith(fence[1])) body.push(lines[i++]);
        i += 1;
        root.append(codeBlock(fence[2], body));
        continue;
      }
      const heading = /^(#{1,6})\s+(.*)$/.exec(line);
      if (heading) {
        root.append(inline(heading[2], el(`h${Math.min(heading[1].length + 2, 6)}`)));
        i += 1;
        continue;
      }
      if (/^\s*([-*+]|\d+[.)])\s+/.test(line)) {
        const ordered = /^\s*\d+[.)]\s+/.test(line);
        const list = el(ordered ? "ol" : "ul");
        while (i < lines.length && /^\s*([-*+]|\d+[.)])\s+/.test(lines[i])) {
          list.append(inline(lines[i].replace(/^\s*([-*+]|\d+[.)])\s+/, ""), el("li")));
          i += 1;
        }
        root.append(list);
        continue;
      }
      if (/^>\s?/.test(line)) {
        const quoted = [];
        while (i < lines.length && /^>\s?/.test(lines[i])) {
          quoted.push(lines[i].replace(/^>\s?/, ""));
          i += 1;
        }
        root.append(inline(quoted.join("\n"), el("blockquote")));
        continue;
      }
      if (!line.trim()) {
        i += 1;
        continue;
      }
      const para = [];
      while (i < lines.length && lines[i].trim() &&
             !/^\s*(```|~~~|#{1,6}\s|[-*+]\s|\d+[.)]\s|>)/.test(lines[i])) {
        para.push(lines[i]);
        i += 1;
      }
      if (!para.length) {  // a line no rule took: shown as it is
        para.push(line);
        i += 1;
      }
      root.append(inline(para.join("\n"), el("p")));
    }
    return root;
  }

  return {markdown, inline, safeHref};
})();
