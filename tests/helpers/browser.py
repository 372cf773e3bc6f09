"""A real headless Chromium (Debian's ``chromium`` and ``chromium-driver``, driven by
Selenium) for the web page's tests: no browser is downloaded, and a test skips when the
packages are missing unless CI requires them (``HPC_CHAT_REQUIRE_BROWSER=1``)."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
DRIVER = "/usr/bin/chromedriver"


def have_browser() -> bool:
    return Path(CHROMIUM).exists() and shutil.which("chromedriver") is not None


def open_browser(tmp_path: Path):
    """A headless Chromium with a profile of its own (quit it when done)."""
    if not have_browser():
        if os.environ.get("HPC_CHAT_REQUIRE_BROWSER") == "1":
            pytest.fail("chromium and chromium-driver are required (apt-get install chromium "
                        "chromium-driver)")
        pytest.skip("chromium and chromium-driver are not installed")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,900", f"--user-data-dir={tmp_path / 'chromium'}",
                "--no-first-run", "--disable-extensions"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(executable_path=shutil.which("chromedriver") or DRIVER,
                      log_output=str(tmp_path / "chromedriver.log"))
    return webdriver.Chrome(options=options, service=service)


def wait_for(condition, timeout: float = 60, what: str = "the page", diagnose=None):
    """Poll ``condition()`` until it returns a true value (returned); a generous deadline,
    never a verdict on speed. ``diagnose()`` adds what the page says to a timeout."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            value = condition()
        except Exception as exc:  # noqa: BLE001 - an element not there yet
            last, value = exc, None
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what} ({last!r})"
                         + (f": {diagnose()}" if diagnose is not None else ""))
