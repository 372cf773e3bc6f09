"""Where the user's running server says where it listens, and keeps its API key.

``serve`` writes both (:mod:`hpc_chat.server.run`, :mod:`hpc_chat.server.auth`); clients of the
same user read them (:mod:`hpc_chat.client.http`). Declared here, below both, so neither
half imports the other.
"""

from __future__ import annotations

from pathlib import Path

from hpc_chat.util.paths import home_subdir

ENV = "HPC_CHAT_API_KEY"  # a key given in the environment wins over the key file


def key_file() -> Path:
    return home_subdir("server") / "api-key"


def server_file() -> Path:
    return home_subdir("server") / "server.json"
