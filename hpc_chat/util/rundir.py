"""The user's runtime directory on this node: where hpc_chat's Unix sockets live.

Engines (:mod:`hpc_chat.worker.node_engine`) and ``hpc-chat serve`` listen on Unix sockets, which
only those who can open their directory can reach. The directory must be the user's own, mode
0700, on every node, and every process of the user there must find the same one without being
told: see :func:`runtime_dir`.
"""

from __future__ import annotations

import logging
import os
import stat
import tempfile
from pathlib import Path

from hpc_chat.errors import ConfigError

log = logging.getLogger(__name__)

MAX_SOCKET_PATH = 100  # a Unix socket path must fit in 108 bytes


def runtime_dir() -> Path:
    """This user's meeting place for sockets on this node (the engines', the server's): a
    directory only this user can open.

    ``$TMPDIR/hpc_chat-UID`` (``/tmp`` when that is too long for a socket path). Another user
    can create that name first on a shared node: then ``$XDG_RUNTIME_DIR/hpc_chat`` when the
    node gives one, else a private ``hpc_chat-UID-XXXXXX`` made beside it with mkdtemp. Every
    worker of the node finds the same one, the first of this user's in name order, so they
    still meet at one engine; directories of that name that are not this user's private ones
    are passed over, never used."""
    uid = os.getuid()
    base = Path(tempfile.gettempdir())
    if len(str(base / f"hpc_chat-{uid}")) > MAX_SOCKET_PATH - 60:  # room for the file name
        base = Path("/tmp")
    plain = base / f"hpc_chat-{uid}"
    if _private_dir(plain, create=True):
        return plain
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and len(runtime) < MAX_SOCKET_PATH - 80 and _private_dir(Path(runtime)) and \
            _private_dir(Path(runtime) / "hpc_chat", create=True):
        found = Path(runtime) / "hpc_chat"
    else:  # mkdtemp adds 9 characters to the name
        spare = base if len(str(plain)) + 9 <= MAX_SOCKET_PATH - 60 else Path("/tmp")
        found = _own_spare(spare, f"hpc_chat-{uid}-")
    if found not in _warned:
        _warned.add(found)
        log.warning("%s is not a private directory of yours (made by another user?): engine "
                    "sockets go to %s", plain, found)
    return found


_warned: set[Path] = set()


def _private_dir(path: Path, *, create: bool = False) -> bool:
    """A real directory (not a link) of this user that nobody else can open."""
    if create:
        try:
            path.mkdir(mode=0o700)
        except FileExistsError:
            pass
        except OSError:
            return False
    try:
        info = path.lstat()
    except OSError:
        return False
    return stat.S_ISDIR(info.st_mode) and info.st_uid == os.getuid() and \
        not info.st_mode & 0o077


def _own_spare(base: Path, prefix: str) -> Path:
    """The first private directory ``base/prefix*`` of this user, made when there is none.
    Two workers that both make one converge on the first in name order; the other stays
    empty."""
    def own() -> list[Path]:
        return sorted(p for p in base.glob(prefix + "*") if _private_dir(p))

    found = own()
    if not found:
        try:
            tempfile.mkdtemp(prefix=prefix, dir=base)  # 0700, a name nobody chose before
        except OSError as exc:
            raise ConfigError(f"{base}: cannot make a private directory for the engine's "
                              f"socket: {exc.strerror or exc}; set TMPDIR to a directory of "
                              f"yours") from None
        found = own()
    return found[0]
