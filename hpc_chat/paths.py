"""Where hpc_chat keeps its per-user state (history, run directories, user profiles)."""

from __future__ import annotations

import os
from pathlib import Path


def hpc_chat_home() -> Path:
    """``$HPC_CHAT_HOME`` or ``~/.hpc_chat``; created with mode 0700 because it holds history."""
    home = Path(os.environ.get("HPC_CHAT_HOME") or Path.home() / ".hpc_chat").expanduser()
    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    return home
