"""A request's ``response_format`` (or raw ``grammar``) compiled into an
:class:`~hpc_chat.protocol.output_format.OutputFormat`: the GBNF grammar llama.cpp's grammar
sampler enforces on that one sequence.

The JSON Schema to GBNF conversion is llama.cpp's own (:mod:`hpc_chat.structured.converter`).

Compiling is cached per schema: a batch of a million lines with one schema
compiles it once per process. A raw grammar is checked by llama.cpp itself when the engine
builds the sequence's sampler (:class:`hpc_chat.errors.FormatError` before any decoding).
"""

from __future__ import annotations

import hashlib
import json
from functools import lru_cache
from typing import Any

from pydantic import ValidationError

from hpc_chat.errors import FormatError
from hpc_chat.protocol.output_format import FormatKind, OutputFormat, ResponseFormat
from hpc_chat.structured.converter import converter
from hpc_chat.structured.definitions import renamed_definitions
from hpc_chat.structured.keywords import SchemaRefused, unenforced
from hpc_chat.structured.tools import tools_format

MAX_SCHEMA_BYTES = 64 * 1024
MAX_GRAMMAR_BYTES = 256 * 1024


def canonical(schema: dict[str, Any]) -> str:
    return json.dumps(schema, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def output_format(response_format: Any = None, grammar: Any = None, tools: Any = None,
                  tool_choice: Any = None) -> OutputFormat | None:
    """The format a request asks for, compiled; None for plain text. Raises
    :class:`FormatError` naming the key and, for a schema, the keyword at fault."""
    if tools is not None or tool_choice is not None:
        fmt = tools_format(tools, tool_choice)
        if fmt is not None and (grammar is not None or _type_of(response_format)
                                not in (None, "text")):
            raise FormatError("tools with tool_choice other than none, and a response_format "
                              "or grammar: give one of them", param="tools")
        if fmt is not None:
            return fmt
    if grammar is not None and response_format is not None and \
            _type_of(response_format) != "text":
        raise FormatError("give either response_format or grammar, not both", param="grammar")
    if grammar is not None:
        if not isinstance(grammar, str) or not grammar.strip():
            raise FormatError("grammar must be a GBNF grammar (a non-empty string)",
                              param="grammar")
        if len(grammar.encode()) > MAX_GRAMMAR_BYTES:
            raise FormatError(f"grammar is over {MAX_GRAMMAR_BYTES} bytes", param="grammar")
        if token_element_at(grammar) is not None:
            raise FormatError(f"grammar: token elements (<[id]>, <token>, !<...>, at "
                              f"character {token_element_at(grammar)}) are not supported; "
                              f"write the text they stand for as a string", param="grammar")
        return OutputFormat(kind=FormatKind.GRAMMAR, gbnf=grammar,
                            sha256=hashlib.sha256(grammar.encode()).hexdigest())
    if response_format is None:
        return None
    try:
        rf = response_format if isinstance(response_format, ResponseFormat) else \
            ResponseFormat.model_validate(response_format)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise FormatError(f"response_format{'.' + where if where else ''}: "
                          f"{err['msg']}") from None
    if rf.type == "text":
        return None
    if rf.type == "json_object":
        return _compiled("json_object", canonical({"type": "object"}))
    spec = rf.json_schema
    try:  # in the schema's own key order: the answer's keys come in that order
        text = json.dumps(spec.schema_, separators=(",", ":"), ensure_ascii=True)
    except (TypeError, ValueError) as exc:
        raise FormatError(f"response_format.json_schema.schema is not JSON: {exc}") from None
    if len(text) > MAX_SCHEMA_BYTES:
        raise FormatError(f"response_format.json_schema.schema is over {MAX_SCHEMA_BYTES} "
                          f"bytes")
    fmt = _compiled("json_schema", text)
    return fmt.model_copy(update={"name": spec.name})


@lru_cache(maxsize=256)
def _compiled(kind: str, schema_text: str) -> OutputFormat:
    """Compiled once per schema text; its fingerprint is of the canonical (key-sorted) JSON,
    so the same schema written in another key order has the same sha256."""
    schema = json.loads(schema_text)
    where = "response_format" if kind == "json_object" else "response_format.json_schema"
    try:
        unenforced(schema)
    except SchemaRefused as exc:
        raise FormatError(f"{where}.{exc}") from None
    try:
        gbnf = converter().json_schema_to_gbnf(json.dumps(renamed_definitions(schema)))
    except Exception as exc:  # noqa: BLE001 - whatever the converter raises: refused
        if isinstance(exc, (MemoryError, KeyboardInterrupt)):
            raise
        raise FormatError(f"{where}.schema: llama.cpp's converter cannot turn it into a "
                          f"grammar ({str(exc)[:200] or type(exc).__name__})") from None
    try:
        import jsonschema

        jsonschema.validators.validator_for(
            schema, default=jsonschema.Draft202012Validator).check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise FormatError(f"{where}.schema is not a valid JSON Schema: "
                          f"{exc.message[:200]}") from None
    if len(gbnf.encode()) > MAX_GRAMMAR_BYTES:
        raise FormatError(f"{where}.schema: its grammar would be over {MAX_GRAMMAR_BYTES} "
                          f"bytes (lower maxItems or maxLength)")
    return OutputFormat(kind=FormatKind(kind), gbnf=gbnf, json_schema=schema,
                        sha256=hashlib.sha256(canonical(schema).encode()).hexdigest())


def token_element_at(gbnf: str) -> int | None:
    """Where ``gbnf`` has a token element (``<[id]>``, ``<token>``, ``!<...>``), or None.

    llama.cpp matches those by token id, not by text, which the batched engine's
    first-character check relies on; and where a character rule meets one, llama.cpp can
    accept a token its own check let through and then abort the whole engine. Outside string
    literals, character classes and comments, ``<`` means nothing else in GBNF.
    """
    i, n = 0, len(gbnf)
    while i < n:
        c = gbnf[i]
        if c == "#":  # a comment, to the end of the line
            while i < n and gbnf[i] not in "\r\n":
                i += 1
        elif c in "\"[":  # a literal or a class: skip to its unescaped end
            end = '"' if c == '"' else "]"
            i += 1
            while i < n and gbnf[i] != end:
                i += 2 if gbnf[i] == "\\" else 1
        elif c == "<":
            return i
        i += 1
    return None


FORMAT_KEYS = ("response_format", "grammar", "tools", "tool_choice")


def line_over_run(run: dict[str, Any], line: dict[str, Any]) -> dict[str, Any]:
    """A batch line's options over the run's (``batch --schema``): a line that gives its own
    ``response_format``, ``grammar`` or ``tools`` replaces the run's format, never adds to
    it."""
    if any(k in line for k in FORMAT_KEYS):
        run = {k: v for k, v in run.items() if k not in FORMAT_KEYS}
    return {**run, **line}


def _type_of(response_format: Any) -> Any:
    if isinstance(response_format, ResponseFormat):
        return response_format.type
    return response_format.get("type") if isinstance(response_format, dict) else None
