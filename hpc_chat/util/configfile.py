"""Reading YAML config files and turning validation failures into messages a user can act on.

Every config in hpc_chat (agents, workflows, data units, site profiles) goes through
:func:`load_yaml` and :func:`validate`, so every error names the file and the key path, e.g.
``site_configs/polaris.yaml: provider.launcher.overrides: Input should be a valid string``.
"""

from __future__ import annotations

import os
import re
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from hpc_chat.errors import ConfigError

M = TypeVar("M", bound=BaseModel)


class StrictModel(BaseModel):
    """Base for every config model: unknown keys are mistakes, not silently ignored."""

    model_config = ConfigDict(extra="forbid")

PACKAGE_DIR = Path(str(resources.files("hpc_chat")))
PACKAGED_CONFIG_DIR = PACKAGE_DIR / "config"


def resolve_config_path(path: str | os.PathLike, *, base: Path | None = None,
                        error: type[ConfigError] = ConfigError) -> Path:
    """Find a config file as the original design's examples name them.

    A relative path is tried, in order, against ``base`` (the directory of the file that refers
    to it) or, for a path the user typed (no ``base``), the current directory; then the package
    directory (so ``config/ParslChatWorkflow.yml`` works from anywhere) and the packaged
    ``config/`` directory. A file that refers to another is never resolved against the current
    directory: a packaged workflow run from an untrusted checkout must not pick up that
    checkout's ``config/*.yml``.
    """
    p = Path(path).expanduser()
    if p.is_absolute():
        candidates = [p]
    else:
        candidates = [base / p if base else Path.cwd() / p, PACKAGE_DIR / p,
                      PACKAGED_CONFIG_DIR / p]
    for c in candidates:
        if c.is_file():
            return c
    tried = ", ".join(str(c) for c in candidates)
    raise error(f"{path}: config file not found (looked in: {tried})")


def load_yaml(path: Path, *, error: type[ConfigError] = ConfigError) -> dict[str, Any]:
    """Parse a YAML mapping with ``yaml.safe_load``; syntax errors name the line and column."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise error(f"{path}: cannot read: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise error(f"{path}: not a UTF-8 text file ({exc.reason})") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        context, cmark = getattr(exc, "context", None), getattr(exc, "context_mark", None)
        if context and cmark:  # e.g. an unterminated quote: say where it started
            problem += f" ({context} that starts at line {cmark.line + 1})"
        raise error(f"{path}: invalid YAML: {where}{problem}") from exc
    if data is None:
        raise error(f"{path}: the file is empty")
    if not isinstance(data, dict):
        raise error(f"{path}: expected a mapping of keys at the top level, "
                    f"found {type(data).__name__}")
    return data


# pydantic puts the chosen member of a ``type:``-tagged union into the error location
# (provider.SlurmProvider.account); the YAML has no such key, so it is left out.
_UNION_TAG = re.compile(r"^[A-Z][A-Za-z]*(Provider|Launcher|Executor|Engine)$")


def format_validation_error(source: str, exc: ValidationError) -> str:
    """One line per problem: ``source: key.path: message``."""
    lines = []
    for err in exc.errors(include_url=False):
        parts = [str(p) for p in err["loc"] if not _UNION_TAG.match(str(p))]
        loc = ".".join(parts) or "(top level)"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        lines.append(f"{source}: {loc}: {msg}")
    return "\n".join(lines)


def validate(model: type[M], data: Any, source: str | os.PathLike,
             *, error: type[ConfigError] = ConfigError, context: dict | None = None) -> M:
    """Validate ``data`` against a pydantic model, raising ``error`` with every problem listed."""
    try:
        return model.model_validate(data, context=context)
    except ValidationError as exc:
        raise error(format_validation_error(str(source), exc)) from None
