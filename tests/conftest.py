"""Shared fixtures. Each test session has its own HPC_CHAT_HOME: nothing touches ~/.hpc_chat."""

from __future__ import annotations

import asyncio
import os
import tempfile
from pathlib import Path

import pytest

_HOME = tempfile.mkdtemp(prefix="hpc_chat_test_home_")
os.environ["HPC_CHAT_HOME"] = _HOME
# A user's own defaults for options must not change what the tests run.
for _name in ("HPC_CHAT_MODEL", "HPC_CHAT_SITE", "HPC_CHAT_INPUT", "HPC_CHAT_OUTPUT",
              "HPC_CHAT_SITE_PATH", "COLUMNS"):
    os.environ.pop(_name, None)

FIXTURES = Path(__file__).parent / "fixtures"
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def fixtures() -> Path:
    return FIXTURES


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def hpc_home() -> Path:
    return Path(_HOME)


@pytest.fixture(scope="module")
def loop():
    """One event loop for a module whose workflow fixture outlives a test."""
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


@pytest.fixture
def run():
    """Run a coroutine on a fresh event loop (tests stay synchronous and simple)."""
    loops = []

    def _run(coro):
        loop = asyncio.new_event_loop()
        loops.append(loop)
        return loop.run_until_complete(coro)

    yield _run
    for loop in loops:
        loop.close()


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path
