"""What an answer must look like: OpenAI's ``response_format`` as a request gives it, and the
:class:`OutputFormat` an engine enforces while it decodes.

A request (an HTTP body, a batch line, an agent's YAML, ``ask --schema``) says
``response_format`` in OpenAI's words (:class:`ResponseFormat`: ``text``, ``json_object``, or
``json_schema`` with a name, a schema and ``strict``), gives a raw GBNF ``grammar`` (our
extension, as llama-server's), or offers ``tools`` that the answer may or must call.
:mod:`hpc_chat.structured` turns any of them into an :class:`OutputFormat`: the GBNF grammar
that llama.cpp's grammar sampler applies to that one sequence, the schema the answer is
validated against afterwards, and the schema's fingerprint that provenance records. It
travels inside the :class:`~hpc_chat.protocol.request.GenRequest` to whichever engine decodes
it.
"""

from __future__ import annotations

from enum import Enum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class JsonSchemaSpec(BaseModel):
    """OpenAI's ``response_format.json_schema`` object."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, serialize_by_alias=True)

    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    description: str | None = None
    schema_: dict[str, Any] = Field(default_factory=dict, alias="schema")
    strict: bool | None = None


class ResponseFormat(BaseModel):
    """OpenAI's ``response_format``: plain text, any JSON object, or JSON fitting a schema."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaSpec | None = None

    @model_validator(mode="after")
    def _schema_with_its_type(self) -> ResponseFormat:
        if self.type == "json_schema" and self.json_schema is None:
            raise ValueError("type json_schema needs a json_schema object "
                             "({\"name\": ..., \"schema\": {...}})")
        if self.type != "json_schema" and self.json_schema is not None:
            raise ValueError(f"json_schema is given but type is {self.type!r}")
        return self


class FormatKind(str, Enum):
    JSON_SCHEMA = "json_schema"
    JSON_OBJECT = "json_object"
    GRAMMAR = "grammar"
    TOOLS = "tools"  # a call to one of the request's tools (or, with ``text_allowed``, text)


class OutputFormat(BaseModel):
    """A decoding constraint for one sequence, compiled: what an engine needs to enforce it
    and what the answer is checked against afterwards."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: FormatKind
    gbnf: str  # llama.cpp's grammar, root rule ``root``
    json_schema: dict[str, Any] | None = None  # validated against after decoding; None: grammar
    name: str | None = None  # the schema's name, as the request gave it (a tool's, named)
    text_allowed: bool = False  # tool_choice auto: plain text is an answer too
    sha256: str  # of the schema (canonical JSON) or of the grammar: provenance records it

    @property
    def is_json(self) -> bool:
        return self.kind is not FormatKind.GRAMMAR

    def record(self) -> dict[str, Any]:
        """What provenance says of the format (the schema itself only by its hash)."""
        return {"kind": self.kind.value, "name": self.name, "sha256": self.sha256}
