"""A request's ``response_format`` (or raw ``grammar``) compiled into an
:class:`~hpc_chat.protocol.output_format.OutputFormat`: the GBNF grammar llama.cpp's grammar
sampler enforces on that one sequence.

The JSON Schema to GBNF conversion is llama.cpp's own (``llama_cpp/llama_grammar.py``, the
port llama-cpp-python ships of llama.cpp's ``json_schema_to_grammar``). That file is pure
Python; it is loaded by its path, without the ``llama_cpp`` package around it, so a driver on
a login node checks a schema without loading the native library. Its JSON string rule is
tightened as llama.cpp's newer converter has it (no raw control characters inside a string,
which strict JSON parsers refuse).

Compiling is cached per schema: a batch of a million lines with one schema
compiles it once per process. A raw grammar is checked by llama.cpp itself when the engine
builds the sequence's sampler (:class:`hpc_chat.errors.FormatError` before any decoding).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from functools import lru_cache
from pathlib import Path
from types import ModuleType
from typing import Any

from pydantic import ValidationError

from hpc_chat.errors import FormatError
from hpc_chat.protocol.output_format import FormatKind, OutputFormat, ResponseFormat
from hpc_chat.structured.keywords import SchemaRefused, unenforced

MAX_SCHEMA_BYTES = 64 * 1024
MAX_GRAMMAR_BYTES = 256 * 1024
# A JSON string's character: no quote, backslash or control character unescaped.
STRICT_CHAR = (r'[^"\\\x7F\x00-\x1F] | "\\" (["\\/bfnrt] | "u" [0-9a-fA-F] [0-9a-fA-F] '
               r'[0-9a-fA-F] [0-9a-fA-F])')


@lru_cache(maxsize=1)
def _converter() -> ModuleType:
    spec = importlib.util.find_spec("llama_cpp")
    if spec is None or not spec.submodule_search_locations:
        raise FormatError("structured outputs need llama-cpp-python installed (its JSON "
                          "Schema converter)")
    path = Path(next(iter(spec.submodule_search_locations))) / "llama_grammar.py"
    loader = importlib.util.spec_from_file_location("hpc_chat_llama_grammar", path)
    module = importlib.util.module_from_spec(loader)
    loader.loader.exec_module(module)
    module.PRIMITIVE_RULES["char"] = module.BuiltinRule(STRICT_CHAR, [])
    return module


def canonical(schema: dict[str, Any]) -> str:
    return json.dumps(schema, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def output_format(response_format: Any = None, grammar: Any = None) -> OutputFormat | None:
    """The format a request asks for, compiled; None for plain text. Raises
    :class:`FormatError` naming the key and, for a schema, the keyword at fault."""
    if grammar is not None and response_format is not None and \
            _type_of(response_format) != "text":
        raise FormatError("give either response_format or grammar, not both", param="grammar")
    if grammar is not None:
        if not isinstance(grammar, str) or not grammar.strip():
            raise FormatError("grammar must be a GBNF grammar (a non-empty string)",
                              param="grammar")
        if len(grammar.encode()) > MAX_GRAMMAR_BYTES:
            raise FormatError(f"grammar is over {MAX_GRAMMAR_BYTES} bytes", param="grammar")
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
        gbnf = _converter().json_schema_to_gbnf(schema_text)
    except (AssertionError, ValueError, KeyError, TypeError, RecursionError) as exc:
        raise FormatError(f"{where}.schema: llama.cpp's converter cannot turn it into a "
                          f"grammar ({str(exc)[:200] or type(exc).__name__})") from None
    if len(gbnf.encode()) > MAX_GRAMMAR_BYTES:
        raise FormatError(f"{where}.schema: its grammar would be over {MAX_GRAMMAR_BYTES} "
                          f"bytes (lower maxItems or maxLength)")
    return OutputFormat(kind=FormatKind(kind), gbnf=gbnf, json_schema=schema,
                        sha256=hashlib.sha256(canonical(schema).encode()).hexdigest())


FORMAT_KEYS = ("response_format", "grammar")


def line_over_run(run: dict[str, Any], line: dict[str, Any]) -> dict[str, Any]:
    """A batch line's options over the run's (``batch --schema``): a line that gives its own
    ``response_format`` or ``grammar`` replaces the run's format, never adds to it."""
    if any(k in line for k in FORMAT_KEYS):
        run = {k: v for k, v in run.items() if k not in FORMAT_KEYS}
    return {**run, **line}


def _type_of(response_format: Any) -> Any:
    if isinstance(response_format, ResponseFormat):
        return response_format.type
    return response_format.get("type") if isinstance(response_format, dict) else None
