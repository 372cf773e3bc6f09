"""A worker and the driver's token hub: the messages of a streamed answer.

The driver opens a stream (:meth:`hpc_chat.driver.token_hub.TokenHub.open`) and puts its
:class:`StreamSpec` into the request's task context; the worker connects to one of its
addresses over TLS pinned to the spec's certificate and sends a :class:`Hello` line. The hub
answers with one of its two replies, :data:`ACKNOWLEDGED` or :data:`CLOSED` (only those, which
only the hub can send, stop an answer); the worker then sends JSON lines tagged by ``event``:
:class:`Text` as the answer grows, :class:`Result` when it is done, and :class:`End`.

Both halves import this module (:mod:`hpc_chat.driver.token_hub`, :mod:`hpc_chat.worker.stream`).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

HELLO_LIMIT = 4096  # bytes: a longer first line is not one of ours


class StreamSpec(BaseModel):
    """What a worker needs to send to one stream; JSON in the task context (it crosses
    Parsl and Globus Compute as a plain dict: ``model_dump()`` on send)."""

    model_config = ConfigDict(extra="forbid")

    addresses: list[str]  # the driver's, tried in order
    port: int
    id: str
    secret: str = Field(repr=False)  # this stream's alone
    hub: str  # which hub of the driver's process (not secret)
    certificate: str  # the hub's, PEM: the only one the worker trusts
    tokens: bool = True  # False: only the result, not the text as it grows


class Hello(BaseModel):
    """The worker's first line: which stream, and its secret."""

    id: str
    secret: str


class HubReply(BaseModel):
    ok: bool
    stop: bool = False


def line(message: BaseModel) -> bytes:
    """One message as the JSON line that carries it."""
    return message.model_dump_json().encode() + b"\n"


# The hub's two answers to a Hello: the stream is this connection's now; the stream is closed
# already (its client left while the request waited), stop the answer.
ACKNOWLEDGED = line(HubReply(ok=True))
CLOSED = line(HubReply(ok=False, stop=True))


class Text(BaseModel):
    event: Literal["text"] = "text"
    t: str  # what is new since the last Text


class Result(BaseModel):
    event: Literal["result"] = "result"
    r: dict[str, Any]  # the answer's result, as its task will return it


class End(BaseModel):
    event: Literal["end"] = "end"


Message = Annotated[Text | Result | End, Field(discriminator="event")]
_MESSAGE = TypeAdapter(Message)


def read_hello(raw: bytes) -> Hello:
    """A worker's first line; pydantic's ValidationError (a ValueError) when it is not one."""
    return Hello.model_validate_json(raw)


def read_message(raw: bytes) -> Text | Result | End:
    return _MESSAGE.validate_json(raw)
