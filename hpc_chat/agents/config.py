"""Agent personas as validated YAML (the original design's ``EnhancedCollaborativeAgent``
format).

An agent file looks like::

    name: creative_agent
    description: Creative and imaginative conversational agent
    config:
      model: default          # embedded SmolLM2; an alias or a path to a .gguf file
      temperature: 0.9
      max_tokens: 256
      system_prompt: |
        You are a creative ...
      collaboration:
        delegation_threshold: 0.7
        specialization_keywords: [creative, story, imagine]
      performance:
        enable_caching: true
        cache_ttl: 3600
        retry_attempts: 3

Unknown keys and wrong types are errors that name the file and the key path.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import Field, PrivateAttr, field_validator, model_validator

from hpc_chat.errors import FormatError
from hpc_chat.protocol.embedding import Pooling
from hpc_chat.protocol.output_format import ResponseFormat
from hpc_chat.protocol.request import Sampling
from hpc_chat.structured.compile import output_format
from hpc_chat.util.configfile import StrictModel, load_yaml, resolve_config_path, validate


class CollaborationConfig(StrictModel):
    delegation_threshold: float = Field(0.7, ge=0.0, le=1.0)
    specialization_keywords: list[str] = Field(default_factory=list)

    @field_validator("specialization_keywords")
    @classmethod
    def _non_empty_keywords(cls, value: list[str]) -> list[str]:
        cleaned = [k.strip() for k in value]
        if any(not k for k in cleaned):
            raise ValueError("keywords must be non-empty strings")
        return cleaned


class AgentPerformanceConfig(StrictModel):
    enable_caching: bool = False
    cache_ttl: float = Field(3600, ge=0)
    retry_attempts: int = Field(0, ge=0, le=20)


class AgentSettings(Sampling):
    """The ``config:`` section of an agent file: the sampling settings (defaults and bounds in
    :class:`~hpc_chat.protocol.request.Sampling`), the model and the persona."""

    model: str = "default"
    system_prompt: str
    # Load parameters; None means "use the site's default" (see ModelSettings in the workflow).
    n_ctx: int | None = Field(None, ge=128)
    n_threads: int | None = Field(None, ge=1)
    n_gpu_layers: int | None = Field(None, ge=-1)
    collaboration: CollaborationConfig = Field(default_factory=CollaborationConfig)
    performance: AgentPerformanceConfig = Field(default_factory=AgentPerformanceConfig)
    # The format of every answer (an extractor agent), as OpenAI's response_format, or a raw
    # GBNF grammar; a request's own response_format or grammar replaces it.
    response_format: ResponseFormat | None = None
    grammar: str | None = None
    # How the model's token states become one embedding (mean, cls, last); unset: the
    # GGUF's own pooling, or mean for a generative model (hpc_chat.llm.embedding).
    pooling: Pooling | None = None

    @field_validator("response_format")
    @classmethod
    def _format_enforceable(cls, value: ResponseFormat | None) -> ResponseFormat | None:
        try:  # a schema keyword the grammar would not enforce is refused at load
            output_format(value)
        except FormatError as exc:
            raise ValueError(str(exc).removeprefix("response_format.")) from None
        return value

    @model_validator(mode="after")
    def _one_format(self) -> AgentSettings:
        if self.grammar is not None and self.response_format is not None:
            raise ValueError("give either response_format or grammar, not both")
        if self.grammar is not None and not self.grammar.strip():
            raise ValueError("grammar is empty")
        return self

    @field_validator("system_prompt")
    @classmethod
    def _prompt_not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("the system prompt is empty; write what this agent is for")
        return value.strip()


class AgentConfig(StrictModel):
    """One agent persona: a name, a description and its settings."""

    name: str = Field(pattern=r"^[A-Za-z][A-Za-z0-9_.-]*$")
    description: str = ""
    config: AgentSettings
    # Where the agent was loaded from; not part of the YAML, kept for error messages.
    _source: str | None = PrivateAttr(None)

    @property
    def source(self) -> str:
        return self._source or f"agent {self.name}"

    @classmethod
    def from_yaml(cls, path: str | os.PathLike, *, base: Path | None = None) -> AgentConfig:
        """Load and validate an agent file (a relative path is also looked up in the package)."""
        resolved = resolve_config_path(path, base=base)
        data = load_yaml(resolved)
        agent = validate(cls, data, resolved)
        agent._source = str(resolved)
        return agent

    def to_dict(self) -> dict[str, Any]:
        """The plain-data form sent to workers (and to Globus Compute endpoints)."""
        return self.model_dump(mode="json")
