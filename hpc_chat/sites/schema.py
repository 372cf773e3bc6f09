"""The site profile schema: a ``type:``-tagged YAML that becomes a Parsl ``Config``.

The shape follows Globus Compute's endpoint configs, so one profile also feeds an endpoint's
``config.yaml``::

    name: polaris
    provider:
      type: PBSProProvider
      account: YOUR_ACCOUNT
      queue: debug
      launcher: {type: MpiExecLauncher, bind_cmd: --cpu-bind, overrides: --depth=64 --ppn 1}
    executor: {max_workers_per_node: 4, available_accelerators: 4}
    model: {model: default, n_gpu_layers: -1}
    driver: {queue: debug, walltime: "01:00:00"}

Every value that ends up in a job script is validated here, before any Parsl object exists:
values that go into ``#SBATCH``/``#PBS`` lines or onto a launcher's command line may not contain
newlines, quotes or shell metacharacters, so a hostile profile is rejected, never rendered.
"""

from __future__ import annotations

import re
import shlex
from typing import Annotated, Any, ClassVar, Literal, Union

from pydantic import AfterValidator, Field, PrivateAttr, field_validator, model_validator

from hpc_chat.protocol.context import ModelDefaults
from hpc_chat.sites.schedulers import SCHEDULERS
from hpc_chat.util.configfile import StrictModel

# A value inside a scheduler directive: no whitespace, quotes, newlines, `;`, `$` or backticks.
# `&` and `|` are allowed because Slurm constraints use them ("gpu&hbm80g") and a directive
# line is parsed by sbatch, not by a shell.
_DIRECTIVE_VALUE = re.compile(r"[A-Za-z0-9_.,:@%+=/&|\-\[\]]+")
# A word on a launcher command line (srun/mpiexec overrides): no shell metacharacters at all.
_SHELL_WORD = re.compile(r"[A-Za-z0-9_.,:@%+=/\-]+")
_WALLTIME = re.compile(r"(\d{1,3}):([0-5]\d):([0-5]\d)")
PLACEHOLDER = re.compile(r"YOUR_[A-Z_]+|CHANGE_?ME|<[^<>]+>")


def _directive_value(value: str) -> str:
    if value and not _DIRECTIVE_VALUE.fullmatch(value):
        raise ValueError(f"{value!r} is not allowed in a job script: use letters, digits and "
                         f"_ . , : @ % + = / & | - only (no spaces, quotes, newlines or ;$`)")
    return value


def walltime_seconds(value: str) -> int:
    h, m, s = (int(x) for x in _WALLTIME.fullmatch(value).groups())
    return h * 3600 + m * 60 + s


def _walltime(value: str) -> str:
    if not _WALLTIME.fullmatch(value):
        raise ValueError(f"{value!r} is not a walltime: write HH:MM:SS, e.g. 01:30:00")
    if value in ("0:00:00", "00:00:00", "000:00:00"):
        raise ValueError("the walltime must be longer than zero")
    return value


def _shell_words(value: str) -> str:
    if len(value.splitlines()) > 1:
        raise ValueError("must be a single line")
    try:
        words = shlex.split(value)
    except ValueError as exc:
        raise ValueError(f"cannot be split into words: {exc}") from None
    for word in words:
        if not _SHELL_WORD.fullmatch(word):
            raise ValueError(f"{word!r} is not allowed on a launcher command line: use plain "
                             f"options such as --cpu-bind=cores (no quotes, ;|&$`<> or spaces "
                             f"inside a word)")
    return " ".join(words)


def _module_name(value: str) -> str:
    if not _SHELL_WORD.fullmatch(value):
        raise ValueError(f"{value!r} is not a module name")
    return value


DirectiveValue = Annotated[str, AfterValidator(_directive_value)]
Walltime = Annotated[str, AfterValidator(_walltime)]
ShellWords = Annotated[str, AfterValidator(_shell_words)]
ModuleName = Annotated[str, AfterValidator(_module_name)]


def _directive_lines(prefix: str):
    def check(value: str | list[str]) -> str:
        lines = value.splitlines() if isinstance(value, str) else list(value)
        out = []
        for line in lines:
            if len(line.splitlines()) > 1:  # \n, \r, U+2028, U+0085, ... inside one list item
                raise ValueError(f"{line!r}: one directive per list item, no line breaks")
            line = line.strip()
            if not line:
                continue
            if not line.startswith(prefix + " "):
                raise ValueError(f"each line must be a '{prefix} ...' directive, got {line!r}")
            if any(c in line for c in "`$;\\\"'"):
                raise ValueError(f"{line!r}: quotes, $, ; and backticks are not allowed")
            out.append(line)
        return "\n".join(out)
    return check


# ----------------------------------------------------------------------------- launchers
class _Launcher(StrictModel):
    debug: bool = True


class SrunLauncher(_Launcher):
    type: Literal["SrunLauncher"]
    overrides: ShellWords = ""


class MpiExecLauncher(_Launcher):
    type: Literal["MpiExecLauncher"]
    bind_cmd: ShellWords = "--bind-to"
    overrides: ShellWords = ""


class AprunLauncher(_Launcher):
    type: Literal["AprunLauncher"]
    overrides: ShellWords = ""


class SingleNodeLauncher(_Launcher):
    type: Literal["SingleNodeLauncher"]
    fail_on_any: bool = False


class SimpleLauncher(_Launcher):
    type: Literal["SimpleLauncher"]


Launcher = Annotated[Union[SrunLauncher, MpiExecLauncher, AprunLauncher, SingleNodeLauncher,
                           SimpleLauncher], Field(discriminator="type")]


# ----------------------------------------------------------------------------- providers
class _Provider(StrictModel):
    nodes_per_block: int = Field(1, ge=1)
    init_blocks: int = Field(1, ge=0)
    min_blocks: int = Field(0, ge=0)
    max_blocks: int = Field(1, ge=1)
    parallelism: float = Field(1.0, ge=0.0, le=1.0)
    worker_init: str = ""
    launcher: Launcher = Field(default_factory=lambda: SingleNodeLauncher(
        type="SingleNodeLauncher"))

    @model_validator(mode="after")
    def _blocks_in_order(self):
        if self.min_blocks > self.max_blocks:
            raise ValueError(f"min_blocks ({self.min_blocks}) is larger than max_blocks "
                             f"({self.max_blocks})")
        if self.init_blocks > self.max_blocks:
            raise ValueError(f"init_blocks ({self.init_blocks}) is larger than max_blocks "
                             f"({self.max_blocks})")
        return self


class _ClusterProvider(_Provider):
    """What every batch scheduler's provider has; ``scheduler_name`` picks its table row."""

    scheduler_name: ClassVar[str]
    account: DirectiveValue | None = None
    walltime: Walltime = "00:30:00"
    scheduler_options: str | list[str] = ""
    status_polling_interval: int | None = Field(None, ge=1, description="seconds between "
                                                "status queries; Parsl's default is 60")

    @field_validator("scheduler_options")
    @classmethod
    def _directives(cls, value: str | list[str]) -> str:
        return _directive_lines(SCHEDULERS[cls.scheduler_name].directive_prefix)(value)

    @property
    def scheduler(self) -> str:
        return self.scheduler_name


class SlurmProvider(_ClusterProvider):
    scheduler_name: ClassVar[str] = "slurm"
    type: Literal["SlurmProvider"]
    partition: DirectiveValue | None = None
    qos: DirectiveValue | None = None
    constraint: DirectiveValue | None = None
    clusters: DirectiveValue | None = None
    gres: DirectiveValue | None = None
    cores_per_node: int | None = Field(None, ge=1)
    mem_per_node: int | None = Field(None, ge=1, description="GB")
    gpus_per_node: int | None = Field(None, ge=1)
    exclusive: bool = True
    cmd_timeout: int = Field(10, ge=1)


class PBSProProvider(_ClusterProvider):
    scheduler_name: ClassVar[str] = "pbspro"
    type: Literal["PBSProProvider"]
    queue: DirectiveValue | None = None
    cpus_per_node: int = Field(1, ge=1)
    select_options: DirectiveValue = ""
    cmd_timeout: int = Field(120, ge=1)


class LocalProvider(_Provider):
    type: Literal["LocalProvider"]
    cmd_timeout: int = Field(30, ge=1)

    @property
    def scheduler(self) -> str:
        return "local"


Provider = Annotated[Union[SlurmProvider, PBSProProvider, LocalProvider],
                     Field(discriminator="type")]


# ----------------------------------------------------------------------------- the rest
class ExecutorSettings(StrictModel):
    """HighThroughputExecutor options (one worker pool per node)."""

    max_workers_per_node: int | None = Field(None, ge=1)
    cores_per_worker: float = Field(1.0, gt=0)
    mem_per_worker: float | None = Field(None, gt=0)
    available_accelerators: int | list[DirectiveValue] = Field(default_factory=list)
    cpu_affinity: str = "none"
    address: DirectiveValue | None = None
    interface: DirectiveValue | None = None
    heartbeat_period: int = Field(30, ge=1)
    heartbeat_threshold: int = Field(120, ge=1)
    drain_period: int | None = Field(None, ge=1, description="seconds after a pilot job "
                                     "starts when its workers stop taking new tasks; default: "
                                     "the provider walltime minus walltime_margin")
    walltime_margin: int = Field(120, ge=0, description="seconds before a pilot job's "
                                                        "walltime when its workers drain")
    prefetch_capacity: int = Field(0, ge=0)
    use_driver_python: bool = Field(True, description="put the driver's bin/ on the workers' "
                                                      "PATH before worker_init runs")

    @field_validator("cpu_affinity")
    @classmethod
    def _affinity(cls, value: str) -> str:
        if value in ("none", "block", "alternating", "block-reverse") or \
                re.fullmatch(r"list(:[0-9,\-]+)+", value):
            return value
        raise ValueError("use none, block, alternating, block-reverse or list:0,1:2,3")

    @model_validator(mode="after")
    def _one_address(self):
        if self.address and self.interface:
            raise ValueError("set address or interface, not both")
        return self


class ModelSettings(StrictModel, ModelDefaults):
    """The site's default model for agents that say ``model: default`` (its fields are
    declared once, in :class:`hpc_chat.protocol.context.ModelDefaults`)."""

    @field_validator("model")
    @classmethod
    def _echo_options(cls, value: str) -> str:
        """``echo?...`` (the built-in test model) is checked here; files are checked on the
        host that loads them."""
        from hpc_chat.errors import ModelNotFoundError
        from hpc_chat.llm.echo import is_echo, parse_echo

        if is_echo(value):
            try:
                return parse_echo(value).name()
            except ModelNotFoundError as exc:
                raise ValueError(str(exc)) from None
        return value

    @field_validator("aliases")
    @classmethod
    def _echo_aliases(cls, value: dict[str, str]) -> dict[str, str]:
        return {name: cls._echo_options(target) for name, target in value.items()}


class DriverSettings(StrictModel):
    """What the driver batch job (``hpc-chat submit``) asks the scheduler for."""

    mode: Literal["pilot", "allocation"] = "allocation"
    account: DirectiveValue | None = None
    partition: DirectiveValue | None = None
    queue: DirectiveValue | None = None
    qos: DirectiveValue | None = None
    constraint: DirectiveValue | None = None
    walltime: Walltime = "01:00:00"
    nodes: int = Field(1, ge=1)
    cpus_per_task: int | None = Field(None, ge=1)
    select_options: DirectiveValue | None = None
    modules: list[ModuleName] = Field(default_factory=list)
    environment: str = Field("", description="shell lines that activate the environment "
                                             "with hpc_chat installed")
    scheduler_options: list[str] = Field(default_factory=list)


class Maintainer(StrictModel):
    name: str = ""
    email: str = ""


class SiteProfile(StrictModel):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    description: str = ""
    maintainer: Maintainer = Field(default_factory=Maintainer)
    documentation: str = ""
    provider: Provider
    executor: ExecutorSettings = Field(default_factory=ExecutorSettings)
    model: ModelSettings = Field(default_factory=ModelSettings)
    driver: DriverSettings = Field(default_factory=DriverSettings)
    _source: str | None = PrivateAttr(None)

    @property
    def source(self) -> str:
        return self._source or f"site {self.name}"

    @property
    def scheduler(self) -> str:
        return self.provider.scheduler

    @property
    def launcher(self) -> str:
        return self.provider.launcher.type

    @model_validator(mode="after")
    def _driver_options_match_scheduler(self):
        prefix = SCHEDULERS[self.scheduler].directive_prefix
        if prefix:
            try:
                _directive_lines(prefix)(self.driver.scheduler_options)
            except ValueError as exc:
                raise ValueError(f"driver.scheduler_options: {exc}") from None
        return self

    def with_blocks(self, blocks: int) -> SiteProfile:
        """This site with exactly ``blocks`` pilot jobs from start to end (a Batch API batch's
        own), at most the profile's ``provider.max_blocks``: the site's admin sets that bound."""
        from hpc_chat.errors import ProfileError

        if not 1 <= blocks <= self.provider.max_blocks:
            raise ProfileError(f"{self.source}: {blocks} blocks asked; this site allows 1 to "
                               f"{self.provider.max_blocks} (provider.max_blocks)")
        provider = self.provider.model_copy(update={"init_blocks": blocks,
                                                    "min_blocks": blocks, "max_blocks": blocks})
        narrowed = self.model_copy(update={"provider": provider})
        narrowed._source = self._source
        return narrowed

    def refuse_placeholders(self, doing: str) -> None:
        """Stop with the list of keys to edit before ``doing`` something real on this site."""
        from hpc_chat.errors import ProfileError

        problems = self.placeholders()
        if problems:
            raise ProfileError(f"{self.source}: edit these placeholder values before {doing}:"
                               f"\n  " + "\n  ".join(problems))

    def placeholders(self) -> list[str]:
        """Key paths whose values still look like template placeholders (``YOUR_ACCOUNT``)."""
        found: list[str] = []

        def walk(value: Any, path: str) -> None:
            if isinstance(value, dict):
                for k, v in value.items():
                    walk(v, f"{path}.{k}" if path else str(k))
            elif isinstance(value, list):
                for i, v in enumerate(value):
                    walk(v, f"{path}.{i}")
            elif isinstance(value, str) and PLACEHOLDER.search(value):
                found.append(f"{path}: {value!r}")

        walk(self.model_dump(exclude={"description", "documentation", "maintainer"}), "")
        return found
