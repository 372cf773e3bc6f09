"""Opening batch outputs, their errors files, locks and rewrites safely in a shared directory.

Outputs hold every prompt and its provenance, and project directories are often writable by a
whole group. So a new output is created 0600 (0640 with ``--group-readable``) whatever the
umask; a name is opened through a symbolic link only when the link is the user's own (one they
made on purpose; another user's planted link to, say, ``~/.bashrc`` is refused); an existing
file of another user is never appended to; a rewrite goes to a fresh ``mkstemp`` file that
takes the original's mode before it replaces it.
"""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path
from typing import TextIO

from hpc_chat.errors import InputError
from hpc_chat.util.paths import user_name

PRIVATE = 0o600
GROUP_READABLE = 0o640


def own_link(path: Path, what: str = "the output") -> bool:
    """Whether ``path`` is a symbolic link of this user's; another user's link is refused
    (before anything, its lock included, is made where it points)."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise InputError(f"{path}: cannot write {what}: {exc.strerror or exc}") from None
    if not stat.S_ISLNK(info.st_mode):
        return False
    if info.st_uid != os.getuid():
        raise InputError(f"{path}: {what} is a symbolic link made by {user_name(info.st_uid)}, "
                         f"not by you: hpc_chat does not write through it. Remove it, or "
                         f"choose another output")
    return True


def open_append(path: Path, *, mode: int = PRIVATE, what: str = "the output") -> int:
    """A descriptor to append to ``path`` (created with ``mode`` when missing)."""
    flags = os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC  # read: its last byte
    if not own_link(path, what):
        flags |= os.O_NOFOLLOW  # a link put there after the look above fails the open
    try:
        fd = os.open(path, flags, mode)
    except OSError as exc:
        raise InputError(f"{path}: cannot write {what}: {exc.strerror or exc}") from None
    st = os.fstat(fd)
    if stat.S_ISREG(st.st_mode) and st.st_uid != os.getuid():
        os.close(fd)
        raise InputError(f"{path}: {what} belongs to {user_name(st.st_uid)}, not to you: "
                         f"hpc_chat does not add your prompts to another user's file. "
                         f"Choose another output")
    if stat.S_ISREG(st.st_mode) and st.st_nlink > 1:  # a hard link: another name for a file
        os.close(fd)                                   # (one of yours, put there by someone?)
        raise InputError(f"{path}: {what} has {st.st_nlink} names (hard links): hpc_chat "
                         f"writes only to a file with one name. Choose another output")
    return fd


def open_lock(path: Path) -> int:
    """The lock file's descriptor: created 0600, never through a link, always this user's
    own single-named regular file (it is truncated to say who holds it)."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, PRIVATE)
    except OSError as exc:
        why = "it is a symbolic link, which hpc_chat does not follow for its lock files; " \
              "remove it" if os.path.islink(path) else exc.strerror or str(exc)
        raise InputError(f"{path}: cannot create the output's lock file: {why}") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_uid != os.getuid() or st.st_nlink != 1:
        os.close(fd)
        raise InputError(f"{path}: the output's lock file is not a plain file of yours "
                         f"(owner {user_name(st.st_uid)}, {st.st_nlink} names): remove it")
    return fd


def write_private(path: Path, text: str) -> None:
    """``text`` as ``path``'s whole content, mode 0600 whatever was there (a secret: a key, a
    login link): a fresh private temporary file beside it, renamed over it."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")  # made 0600
    try:
        with os.fdopen(fd, "w") as out:
            out.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def replace_whole(path: Path, data) -> None:
    """Write ``data`` (bytes, or an iterable of bytes: written as it comes) as ``path``'s new
    content: a fresh private temporary file beside it, given ``path``'s mode, then renamed
    over it (a reader never sees half)."""
    try:
        keep = stat.S_IMODE(os.stat(path).st_mode)
    except FileNotFoundError:
        keep = PRIVATE
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".compact")
    try:
        with os.fdopen(fd, "wb") as out:
            os.fchmod(out.fileno(), keep)
            if isinstance(data, bytes):
                out.write(data)
            else:
                for chunk in data:
                    out.write(chunk)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def ensure_line_start(path: Path, fh: TextIO) -> None:
    """A run killed mid-write may leave a partial last line; start on a fresh line. (Read
    through the open file, not the name: the name may have been swapped since.)"""
    size = os.fstat(fh.fileno()).st_size
    if size and os.pread(fh.fileno(), 1, size - 1) != b"\n":
        fh.write("\n")
        fh.flush()
