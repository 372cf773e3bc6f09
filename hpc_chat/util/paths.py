"""Where hpc_chat keeps its per-user state (history, run records, profiles, the API key), and
the checks that make it the user's own.

On a shared login node another user may have created ``$HPC_CHAT_HOME`` first, or made it a
symlink, or be able to write to a directory above it. The home is on the site-profile search
path (a profile's ``worker_init`` runs as the user) and holds ``models.yaml``, the job ids that
reach ``scancel`` and the server's key, so, as OpenSSH's StrictModes does, hpc_chat refuses a
home (or a directory in it) that is a symlink, is not owned by the user, or that its group or
others can write, and a home inside a directory that every user can write without the sticky
bit of /tmp (anyone could rename the home and put theirs in its place). A project directory
its group can write (``/projects/GROUP``, mode 2770) is accepted above the home: the group is
the project, and shares the data there anyway. Group and other read bits on a home the user
owns are taken away (reading is not planting); anything else is refused with what to do.
"""

from __future__ import annotations

import os
import pwd
import stat
from pathlib import Path

from hpc_chat.errors import ConfigError


def user_name(uid: int) -> str:
    """``alice (uid 1234)``, or ``uid 1234`` when the name is not known here: who owns what
    hpc_chat refuses."""
    try:
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"


def check_private_dir(path: Path, what: str) -> None:
    """Refuse ``path`` unless it is a real directory (not a link) of this user that nobody
    else can write. ``what`` names it in the message (``HPC_CHAT_HOME``)."""
    info = path.lstat()
    if stat.S_ISLNK(info.st_mode):
        raise ConfigError(f"{path} ({what}) is a symbolic link: hpc_chat does not follow links "
                          f"for its own files. Set HPC_CHAT_HOME to the real directory "
                          f"({os.path.realpath(path)}) if it is yours, or remove the link")
    if not stat.S_ISDIR(info.st_mode):
        kind = "a file, not a directory" if stat.S_ISREG(info.st_mode) else "not a directory"
        raise ConfigError(f"{path} ({what}) is {kind}: move it away, or "
                          f"set HPC_CHAT_HOME to a directory")
    if info.st_uid != os.getuid():
        raise ConfigError(f"{path} ({what}) belongs to {user_name(info.st_uid)}, not to you: "
                          f"whoever owns it can plant site profiles that run commands as you. "
                          f"Set HPC_CHAT_HOME to a directory of your own (the default is "
                          f"~/.hpc_chat)")
    if info.st_mode & 0o022:
        raise ConfigError(f"{path} ({what}) can be written by its group or by others (mode "
                          f"{stat.S_IMODE(info.st_mode):04o}): anyone there could have planted "
                          f"files in it. Check what it holds, then: chmod 700 {path}")


def check_parents(path: Path, what: str) -> None:
    """Refuse a path that any user could replace: a directory above it (after links are
    resolved) that every user can write without the sticky bit (/tmp has it: there only
    owners rename)."""
    real = Path(os.path.realpath(path))
    for parent in real.parents:
        try:
            info = parent.stat()
        except OSError:
            continue
        if info.st_mode & 0o002 and not info.st_mode & stat.S_ISVTX:
            raise ConfigError(f"{path} ({what}) is inside {parent}, which every user can "
                              f"write (mode {stat.S_IMODE(info.st_mode):04o}, no sticky bit): "
                              f"anyone could rename it and put their own in its place. Set "
                              f"HPC_CHAT_HOME to a directory under one that not everybody "
                              f"can write")


def _home_path() -> tuple[Path, str]:
    source = "HPC_CHAT_HOME" if os.environ.get("HPC_CHAT_HOME") else "the default ~/.hpc_chat"
    return Path(os.environ.get("HPC_CHAT_HOME") or Path.home() / ".hpc_chat").expanduser(), \
        source


def _checked(home: Path, source: str) -> Path:
    try:
        check_private_dir(home, source)
        check_parents(home, source)
    except PermissionError as exc:
        raise ConfigError(f"{home} ({source}): cannot use it as hpc_chat's home: "
                          f"{exc.strerror or exc}") from None
    mode = stat.S_IMODE(home.lstat().st_mode)
    if mode & 0o077:  # readable by others (made by hand, or by an older version)
        home.chmod(mode & 0o700)
    return home


def hpc_chat_home() -> Path:
    """``$HPC_CHAT_HOME`` or ``~/.hpc_chat``: created 0700 when missing, checked as the
    module docstring says when it exists."""
    home, source = _home_path()
    try:
        home.mkdir(mode=0o700, parents=True, exist_ok=True)
    except FileExistsError:
        pass  # a file, or a dangling link: the check says which
    except OSError as exc:
        raise ConfigError(f"{home} ({source}): cannot use it as hpc_chat's home: "
                          f"{exc.strerror or exc}") from None
    try:
        return _checked(home, source)
    except FileNotFoundError:
        raise ConfigError(f"{home} ({source}) is a link to nowhere: remove it, or set "
                          f"HPC_CHAT_HOME to a directory") from None


def existing_home() -> Path | None:
    """The home when it exists (checked), else None: for readers that must not create it."""
    home, source = _home_path()
    try:
        home.lstat()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError(f"{home} ({source}): cannot use it as hpc_chat's home: "
                          f"{exc.strerror or exc}") from None
    return _checked(home, source)


def home_subdir(name: str) -> Path:
    """``HOME/name``, created 0700, and refused when it is a link, another user's, or
    writable by others."""
    home = hpc_chat_home()
    path = home / name
    try:
        path.mkdir(mode=0o700, exist_ok=True)
    except FileExistsError:
        pass
    except OSError as exc:
        raise ConfigError(f"{path}: cannot create it: {exc.strerror or exc}") from None
    check_private_dir(path, f"in {home}")
    return path
