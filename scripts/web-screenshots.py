#!/usr/bin/env python3
"""Screenshots of `hpc-chat serve`'s chat and status pages for docs/web.md, made on this
machine with the packaged agents and the real embedded model, in Debian's headless Chromium.

    .venv/bin/python scripts/web-screenshots.py        # writes docs/web-chat.png, web-status.png

It starts its own server (local site, a temporary home), logs in with the one-time link, asks a
routed question that two agents answer and one that an agent answers alone, then opens the
status page; the caption line it prints names the machine, for docs/web.md."""

from __future__ import annotations

import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.helpers.browser import open_browser, wait_for  # noqa: E402
from tests.integration.test_web import answered, panel_texts, send  # noqa: E402


def cpu() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def notes(browser) -> str:
    return repr([n.text for n in browser.find_elements("css selector", ".note")])


def main() -> int:
    work = Path(tempfile.mkdtemp(prefix="hpc-chat-shots-"))
    home = work / "home"
    env = {**os.environ, "HPC_CHAT_HOME": str(home)}
    log = open(work / "serve.log", "w")
    server = subprocess.Popen([sys.executable, "-m", "hpc_chat", "serve", "--port", "0"],
                              env=env, stdout=log, stderr=log)
    browser = None
    try:
        info = home / "server" / "server.json"
        wait_for(lambda: info.exists() and json.loads(info.read_text())["pid"] == server.pid,
                 120, "the server")
        root = json.loads(info.read_text())["url"].removesuffix("v1")
        browser = open_browser(work)
        browser.set_window_size(1280, 860)
        browser.get((home / "server" / "login-url").read_text().strip())
        wait_for(lambda: browser.current_url == root, 60, "the login")
        wait_for(lambda: len(browser.find_elements("css selector", "#model option")) > 1, 60,
                 "the models")
        wait_for(lambda: browser.find_element("id", "server-state").text == "ready", 600,
                 "a worker with its model loaded")
        send(browser, "How do I submit a batch job with Slurm? Give a short example.",
             "balanced_agent")
        wait_for(lambda: answered(browser) and len(panel_texts(browser)) == 1, 600,
                 "the first answer", diagnose=lambda: notes(browser))
        send(browser, "Imagine a story about a supercomputer, then analyze why it is fast.",
             "auto")
        wait_for(lambda: answered(browser) and len(panel_texts(browser)) >= 3, 900,
                 "the routed answer", diagnose=lambda: notes(browser))
        time.sleep(1)
        browser.save_screenshot(str(ROOT / "docs" / "web-chat.png"))
        browser.get(root + "status")
        wait_for(lambda: browser.find_elements("css selector", "#engines tbody tr td")
                 and "node engine" in browser.find_element("id", "engines").text, 60,
                 "the engines")
        time.sleep(2.5)
        browser.save_screenshot(str(ROOT / "docs" / "web-status.png"))
    finally:
        if browser is not None:
            browser.quit()
        server.terminate()
        server.wait(120)
    print(f"Made on {time.strftime('%Y-%m-%d %H:%M')}, on {cpu()} (host "
          f"{socket.gethostname()}, {os.cpu_count()} cores), with the embedded "
          f"SmolLM2-135M model, by scripts/web-screenshots.py.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
