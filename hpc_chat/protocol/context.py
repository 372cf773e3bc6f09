"""What the driver sends with each request besides the agent and the prompt: its task context.

The workflow builds a :class:`TaskContext` and sends it as a plain dict (``model_dump()``:
Parsl pickles it, Globus Compute serializes it); the worker reads it back with
``model_validate`` (:func:`hpc_chat.worker.chat.prepare`). A context written by hand for the
original design's ``process_chat_message(agent_config, message, context)`` is read the same way:
keys it does not know are ignored, as they always were.

The site's model defaults are declared here once: :class:`ModelDefaults` is what a site
profile's ``model`` section holds (:class:`hpc_chat.sites.schema.ModelSettings` adds its
checks), and :class:`SiteModel` is what a worker gets, with ``--model`` as ``override``.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from hpc_chat.protocol.stream import StreamSpec


class ModelDefaults(BaseModel):
    """The site's default model for agents that say ``model: default``, and its engine."""

    model: str = "default"
    n_ctx: int = Field(2048, ge=128)
    n_threads: int | None = Field(None, ge=1)
    n_gpu_layers: int = Field(0, ge=-1)
    n_batch: int = Field(512, ge=1)
    aliases: dict[str, str] = Field(default_factory=dict)
    # node: one engine per model (per GPU) on each node decodes every worker's requests in one
    # continuous batch of engine_slots sequences; worker: each worker decodes its own tasks.
    engine: Literal["node", "worker"] = "node"
    engine_slots: int = Field(8, ge=1, le=256)
    # The KV memory (MiB) an engine's prompt cache may keep (holder sequences of prompt chunks
    # requests share: agents' system prompts, conversations' earlier turns), but at least 3
    # holders, whatever they take; 0 turns it off
    prefix_cache_mb: int = Field(1024, ge=0, le=1 << 20)
    # the node engines of the workflow's models load as each worker pool starts (false: when
    # a worker first needs one)
    preload: bool = True


class SiteModel(ModelDefaults):
    """The site's model defaults as a worker gets them."""

    model_config = ConfigDict(extra="ignore")

    override: str | None = None  # --model (or $HPC_CHAT_MODEL): every agent runs this model


class TaskContext(BaseModel):
    model_config = ConfigDict(extra="ignore")

    # Earlier {"role", "content"} turns (a stored turn's other keys are ignored)
    history: list[dict[str, Any]] = Field(default_factory=list)
    options: dict[str, Any] = Field(default_factory=dict)  # sampling, over the agent's own
    model: SiteModel = Field(default_factory=SiteModel)
    system_prompt: str | None = None  # the caller's own, over the agent's
    exact: bool = False  # the caller's own messages: decoded as given, never shortened
    stream: StreamSpec | None = None  # where to send the text as it grows
