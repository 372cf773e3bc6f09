"""Where hpc_chat keeps its per-user state (history, run directories, user profiles)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from hpc_chat.errors import ConfigError


def hpc_chat_home() -> Path:
    """``$HPC_CHAT_HOME`` or ``~/.hpc_chat``, a directory only its owner can read.

    It holds conversation history and Parsl's logs, so it is created with mode 0700, and a
    home found readable by others (created by hand, or by an older version) is tightened.
    """
    source = "HPC_CHAT_HOME" if os.environ.get("HPC_CHAT_HOME") else "the default ~/.hpc_chat"
    home = Path(os.environ.get("HPC_CHAT_HOME") or Path.home() / ".hpc_chat").expanduser()
    try:
        home.mkdir(mode=0o700, parents=True, exist_ok=True)
        mode = home.stat().st_mode
        if stat.S_IMODE(mode) & 0o077 and home.stat().st_uid == os.getuid():
            home.chmod(stat.S_IMODE(mode) & 0o700)
    except FileExistsError:
        raise ConfigError(f"{home} ({source}) is a file, not a directory: move it away or set "
                          f"HPC_CHAT_HOME to a directory") from None
    except OSError as exc:
        raise ConfigError(f"{home} ({source}): cannot use it as hpc_chat's home: "
                          f"{exc.strerror or exc}") from None
    return home
