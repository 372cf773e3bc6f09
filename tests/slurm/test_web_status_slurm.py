"""The status page in a real headless Chromium while `hpc-chat serve`'s pilot job waits in
the local Slurm's queue, then runs (#33): the job's scheduler state with its reason, then
RUNNING with its node and workers, and the node's engine with its slots once it has answered.
The pilot job is held (``#SBATCH --hold``) until the test releases it, whatever the speed."""

from __future__ import annotations

import signal
import subprocess

from tests.helpers.browser import open_browser, wait_for
from tests.helpers.server import start_server

from .conftest import squeue_ids, wait_until


def cells(browser, table: str) -> list[list[str]]:
    from selenium.webdriver.common.by import By

    return [[td.text for td in row.find_elements(By.TAG_NAME, "td")]
            for row in browser.find_elements(By.CSS_SELECTOR, f"#{table} tbody tr")]


def test_the_status_page_shows_the_pilot_job_pending_then_running_and_its_engine(
        tmp_path, fixtures):
    server = start_server(tmp_path, fixtures / "workflows" / "fast.yml",
                          extra=("--site", str(fixtures / "sites" / "local-slurm-held.yaml")),
                          wait_ready=False)
    browser = open_browser(tmp_path)
    job = None
    try:
        browser.get((server.home / "server" / "login-url").read_text().strip())
        root = server.url.removesuffix("/v1") + "/"
        wait_for(lambda: browser.current_url == root, 30, "the login")
        browser.get(root + "status")
        pending = wait_for(lambda: [r for r in cells(browser, "blocks")
                                    if len(r) == 7 and r[2] == "PENDING"], 120,
                           "the pilot job PENDING on the page")[0]
        job = pending[0]
        assert job in squeue_ids() and "JobHeldUser" in pending[3], pending
        assert pending[4:] == ["0", "0", "0"]  # no node has connected yet
        assert cells(browser, "engines") == [["no engine has answered yet"]]
        assert wait_for(lambda: browser.find_element("id", "server-state").text == "queued",
                        30, "the server's state")

        subprocess.run(["scontrol", "release", job], check=True)
        running = wait_for(lambda: [r for r in cells(browser, "blocks")
                                    if len(r) == 7 and r[2] == "RUNNING" and r[4] == "1"], 180,
                           "the pilot job RUNNING with its node connected")[0]
        assert running[0] == job and running[5] == "2"  # max_workers_per_node
        wait_until(lambda: server.get("/health", key=False)[0] == 200, 180,
                   "the model to be loaded")
        done = server.client().chat.completions.create(
            model="balanced_agent", messages=[{"role": "user", "content": "on slurm"}])
        assert done.choices[0].message.content.startswith("on slurm")
        engine = wait_for(lambda: [r for r in cells(browser, "engines") if len(r) == 8], 30,
                          "the node's engine on the page")[0]
        assert engine[1].startswith("node engine ") and engine[4].endswith(" of 8"), engine
        assert engine[3] == running[1] and engine[6] == "1"  # its block; one answer
        assert browser.find_element("id", "server-state").text == "ready"
    finally:
        browser.quit()
        server.proc.send_signal(signal.SIGTERM)
        assert server.proc.wait(120) == 0
    if job is not None:
        try:
            wait_until(lambda: job not in squeue_ids(), 60, "the pilot job to end with the server")
        finally:
            subprocess.run(["scancel", str(job)], check=False)
