"""Finding and loading site profiles.

A name resolves, first match wins, in: every directory of ``$HPC_CHAT_SITE_PATH`` (colon
separated; admins point this at a site-wide directory), ``~/.hpc_chat/sites/`` (well,
``$HPC_CHAT_HOME/sites``), then the profiles shipped with hpc_chat. ``NAME`` matches
``NAME.yaml`` or ``NAME.yml``; a path to a file works too.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

from hpc_chat.errors import ProfileError
from hpc_chat.sites.schema import SiteProfile
from hpc_chat.util.configfile import PACKAGE_DIR, load_yaml, validate
from hpc_chat.util.paths import check_private_dir, home_subdir, hpc_chat_home

SUFFIXES = (".yaml", ".yml")


def shipped_dir() -> Path:
    """``site_configs/`` of a source checkout, or its installed copy under ``share/``."""
    checkout = PACKAGE_DIR.parent / "site_configs"
    if checkout.is_dir():
        return checkout
    return Path(sys.prefix) / "share" / "hpc_chat" / "site_configs"


def search_path() -> list[Path]:
    dirs = [Path(p).expanduser() for p in os.environ.get("HPC_CHAT_SITE_PATH", "").split(":")
            if p]
    return dirs + [user_sites_dir(), shipped_dir()]


def user_sites_dir() -> Path:
    """``HOME/sites``: its profiles' worker_init lines run as the user, so the home and this
    directory must be the user's own (:mod:`hpc_chat.util.paths`)."""
    home = hpc_chat_home()
    path = home / "sites"
    if os.path.lexists(path):
        check_private_dir(path, f"in {home}")
    return path


def find_profile(name_or_path: str) -> Path:
    candidate = Path(name_or_path).expanduser()
    if candidate.suffix in SUFFIXES or os.sep in name_or_path:
        if candidate.is_file():
            return candidate
        raise ProfileError(f"{name_or_path}: site profile file not found")
    for directory in search_path():
        for suffix in SUFFIXES:
            path = directory / f"{name_or_path}{suffix}"
            if path.is_file():
                return path
    known = ", ".join(sorted(all_profiles())) or "(none)"
    raise ProfileError(f"site {name_or_path!r} not found in "
                       f"{', '.join(str(d) for d in search_path())}; known sites: {known}")


def all_profiles() -> dict[str, Path]:
    """Every profile name on the search path (earlier directories shadow later ones)."""
    found: dict[str, Path] = {}
    for directory in search_path():
        if not directory.is_dir():
            continue
        for path in sorted(directory.iterdir()):
            if path.suffix in SUFFIXES and path.is_file():
                found.setdefault(path.stem, path)
    return found


def load_profile(name_or_path: str | os.PathLike) -> SiteProfile:
    """Load and validate a profile; errors name the file and the key path."""
    path = find_profile(str(name_or_path))
    profile = validate(SiteProfile, load_yaml(path, error=ProfileError), path, error=ProfileError)
    profile._source = str(path)
    return profile


def new_profile(name: str, template: str, *, force: bool = False) -> tuple[Path, SiteProfile]:
    """Copy the profile ``template`` to ``$HPC_CHAT_HOME/sites/NAME.yaml`` with its ``name:``
    set to NAME (the comments stay); refuses to overwrite, and to hide a shipped profile
    (profiles in the home are found first) unless ``force``."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
        raise ProfileError(f"{name!r} is not a site name: use letters, digits and _ . -")
    shipped = [shipped_dir() / f"{name}{suffix}" for suffix in SUFFIXES]
    if not force and any(p.is_file() for p in shipped):
        raise ProfileError(f"{name!r} is a profile shipped with hpc_chat; a profile of yours "
                           f"with that name would hide it everywhere. Choose another name "
                           f"(or pass --force)")
    source = find_profile(template)
    target = home_subdir("sites") / f"{name}.yaml"  # made 0700, checked
    if target.exists():
        raise ProfileError(f"{target} exists already; edit it, or choose another name")
    text = source.read_text(encoding="utf-8")
    text, n = re.subn(r"(?m)^name:.*$", f"name: {name}", text, count=1)
    if not n:
        text = f"name: {name}\n" + text
    target.write_text(text, encoding="utf-8")
    return target, load_profile(target)
