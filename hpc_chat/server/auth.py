"""The server's API key: from ``$HPC_CHAT_API_KEY``, else a key file under the home.

Every route but ``/health`` needs ``Authorization: Bearer KEY``. The key file
(``$HPC_CHAT_HOME/server/api-key``) is created 0600 on the first ``serve`` (or anew with
``--new-key``), so a server is never open to other users of a shared login node, and clients
of the same user read it from there. Keys are compared in constant time and never logged.
"""

from __future__ import annotations

import hmac
import os
import secrets

from hpc_chat.client.files import ENV, key_file
from hpc_chat.errors import ConfigError
from hpc_chat.util.outputfiles import write_private


def load_key(*, new: bool = False) -> tuple[str, str]:
    """The key and where it came from; a key file is written when there is none (or
    ``new``)."""
    if os.environ.get(ENV):
        if new:
            raise ConfigError(f"--new-key writes a key file, but ${ENV} is set and would "
                              f"be used instead: unset it, or change it yourself")
        return os.environ[ENV], f"${ENV}"
    path = key_file()
    if path.exists() and not new:
        if path.stat().st_mode & 0o077:
            raise ConfigError(f"{path}: the API key file is readable by others; "
                              f"chmod 600 {path} (or make a new one with --new-key)")
        key = path.read_text().strip()
        if key:
            return key, str(path)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    key = "hpcchat-" + secrets.token_urlsafe(32)
    write_private(path, key + "\n")
    return key, str(path)


def authorized(header: str | None, key: str) -> bool:
    """``Authorization: Bearer KEY``, compared in constant time."""
    scheme, _, given = (header or "").partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(given.strip().encode(), key.encode())
