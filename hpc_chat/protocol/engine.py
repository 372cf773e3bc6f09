"""A worker and its node's engine: the messages on the engine's Unix socket.

One JSON object per message (``multiprocessing.connection`` frames them). A worker opens one
connection per task and sends on it an :class:`Order` per request, each with its own ``rid``
(request id, unique on that connection): ``status`` (answered with an :class:`EngineStatus`),
``decode`` (a :class:`~hpc_chat.protocol.request.GenRequest`) or ``embed`` (an
:class:`~hpc_chat.protocol.embedding.EmbedRequest`, answered with :class:`Embedded` or
:class:`Failed`). The engine answers a decode with events carrying the order's ``rid``, each
tagged by ``event``: :class:`Stops` first when the text is streamed (what the engine stops on
besides the request's own ``stop``), then :class:`Text` as the answer grows, and last
:class:`Done` or :class:`Failed`. Events of different requests interleave in the order their
answers grow and end. A ``cancel`` order with a request's ``rid`` stops that answer; the
connection's end stops every answer it still holds. An order the engine cannot read is answered
with a :class:`Failed` of kind ``input`` (``rid`` 0: it cannot know the order's) and the
connection is closed.

One connection a task rather than one a request: at corpus scale (millions of short answers)
a connection, a worker thread and an engine thread for each request cost the worker and the
engine about half their time per line (docs/performance.md, "Corpus scale").

Both halves import this module (:mod:`hpc_chat.worker.node_engine`,
:mod:`hpc_chat.worker.engine_client`), and the engine is started by the worker from the same
installation, so both always speak the same version.
"""

from __future__ import annotations

import base64
from enum import Enum
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from hpc_chat.protocol.context import SiteModel
from hpc_chat.protocol.embedding import Embeddings, EmbedRequest
from hpc_chat.protocol.request import Completion, GenRequest


class Op(str, Enum):
    STATUS = "status"
    DECODE = "decode"
    CANCEL = "cancel"
    EMBED = "embed"


class Order(BaseModel):
    """What a worker asks of the engine."""

    model_config = ConfigDict(extra="forbid")

    op: Op
    rid: int = 0  # the request's id on this connection: its events carry it back
    request: GenRequest | None = None  # for ``decode``
    embed: EmbedRequest | None = None  # for ``embed``
    exact: bool = False  # the caller's own messages: never shortened to fit the context
    stream: bool = False  # send the text as it grows


class EngineInfo(BaseModel):
    """Which engine answered: it goes into the answer's provenance."""

    pid: int
    host: str
    slots: int


class EngineStatus(EngineInfo):
    """What an engine holds now (``hpc-chat`` tests and the fault tests read it)."""

    model: str
    in_flight: int
    clients: dict[str, int]  # worker pid -> its requests in flight here (SO_PEERCRED)
    waiting: int
    served: int
    load_s: float
    holders: int = 0  # prompt-cache holder sequences (within the site's prefix_cache_mb)
    # the batched engine's decode calls so far, its passes over the weights for them (runs of
    # consecutive sequence ids) and the tokens it generated: what the benchmark reports
    steps: int = 0
    passes: int = 0
    generated: int = 0


class FailKind(str, Enum):
    LOST = "lost"  # the engine failed, not the request: the task is retried on a fresh one
    TOO_LONG = "too_long"  # the prompt does not fit the context
    INPUT = "input"  # not a request the engine can decode
    FORMAT = "format"  # a grammar llama.cpp cannot parse (``param`` names the request's key)


class Stops(BaseModel):
    event: Literal["stops"] = "stops"
    rid: int = 0
    stops: list[str]


class Text(BaseModel):
    event: Literal["text"] = "text"
    rid: int = 0
    t: str  # what is new since the last Text


class EngineLoad(BaseModel):
    """How busy the engine was as an answer ended: the server's status page shows each
    node's engine from the answers it sent last (asking the engines would need a task that
    waits behind the work)."""

    running: int  # sequences in the batch, this answer's included
    waiting: int  # requests waiting for a slot
    cap: int = 0  # sequences it admits now (llm/slots.py: grows while that pays); 0: unsaid


class Done(BaseModel):
    event: Literal["done"] = "done"
    rid: int = 0
    completion: Completion
    request: GenRequest  # as decoded: its messages fitted to the context
    n_threads: int
    engine: EngineInfo
    load: EngineLoad | None = None


class Embedded(BaseModel):
    event: Literal["embedded"] = "embedded"
    rid: int = 0
    embeddings: Embeddings
    engine: EngineInfo


class Failed(BaseModel):
    event: Literal["failed"] = "failed"
    rid: int = 0
    error: str
    kind: FailKind
    param: str | None = None


Event = Annotated[Stops | Text | Done | Embedded | Failed, Field(discriminator="event")]
_EVENT = TypeAdapter(Event)


def encode(message: BaseModel) -> bytes:
    return message.model_dump_json().encode()


def read_order(raw: bytes) -> Order:
    """An order; pydantic's ValidationError (a ValueError) when it is not one."""
    return Order.model_validate_json(raw)


def read_event(raw: bytes) -> Stops | Text | Done | Embedded | Failed:
    return _EVENT.validate_json(raw)


class AgentModel(BaseModel):
    """An agent's settings that choose its model spec (``worker.chat.model_spec``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str = "default"
    n_ctx: int | None = Field(None, ge=128)
    n_threads: int | None = Field(None, ge=1)
    n_gpu_layers: int | None = Field(None, ge=-1)


MAX_POOL_MODELS = 64  # distinct agent settings a pool loads ahead; the rest load when needed


class PoolStart(BaseModel):
    """What a worker pool's launch line hands :mod:`hpc_chat.worker.pool_start`: the site's
    model defaults and each agent's model settings, so the node engines they need load while
    the pool starts, not after its first task arrives. Sent as URL-safe base64 of its JSON, an
    alphabet a shell and ``str.format`` (Parsl formats the launch line twice) leave alone."""

    model_config = ConfigDict(extra="forbid")

    model: SiteModel
    agents: list[AgentModel] = Field(max_length=MAX_POOL_MODELS)

    def to_arg(self) -> str:
        return base64.urlsafe_b64encode(self.model_dump_json().encode()).decode()

    @classmethod
    def from_arg(cls, arg: str) -> PoolStart:
        """The message; a ValueError (binascii's or pydantic's) when it is not one."""
        return cls.model_validate_json(base64.urlsafe_b64decode(arg.encode("ascii")))
