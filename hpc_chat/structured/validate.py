"""A decoded answer checked against its format: the grammar makes a valid answer likely, this
says whether it is one.

An answer cut by ``max_tokens`` is never valid (its JSON is unfinished), and a grammar-valid
answer can still miss what the grammar cannot say (a ``uniqueItems`` the converter refused
never gets here; a number's range is one). The verdict goes into the answer's provenance and
its ``hpc_chat`` record, never silently dropped.
"""

from __future__ import annotations

import json
from typing import Any

from hpc_chat.protocol.output_format import OutputFormat
from hpc_chat.structured.tools import unwrap_call

_VALIDATORS: dict[str, Any] = {}  # by the format's sha256: built once per schema per process
MAX_VALIDATORS = 64


def _validator(fmt: OutputFormat):
    validator = _VALIDATORS.get(fmt.sha256)
    if validator is None:
        import jsonschema

        schema = fmt.json_schema
        cls = jsonschema.validators.validator_for(schema,
                                                  default=jsonschema.Draft202012Validator)
        if len(_VALIDATORS) >= MAX_VALIDATORS:
            _VALIDATORS.pop(next(iter(_VALIDATORS)))
        validator = _VALIDATORS[fmt.sha256] = cls(schema)
    return validator


def check(fmt: OutputFormat, text: str, finish_reason: str) -> dict[str, Any]:
    """``{"valid": bool, "error": str | None}`` for an answer of format ``fmt``; a raw
    grammar's answer is valid by construction unless it was cut short."""
    if finish_reason != "stop":
        return {"valid": False, "error": f"the answer ended early ({finish_reason}): it is "
                                         f"not complete"}
    if not fmt.is_json:
        return {"valid": True, "error": None}
    if fmt.text_allowed:
        text = unwrap_call(text)  # a call as a template with tool syntax writes it
        if not text.lstrip().startswith("{"):
            return {"valid": True, "error": None}  # tool_choice auto: a text answer
    try:
        value = json.loads(text)
    except ValueError as exc:
        return {"valid": False, "error": f"not JSON: {exc}"}
    try:
        error = next(iter(_validator(fmt).iter_errors(value)), None)
    except Exception as exc:  # noqa: BLE001 - a schema jsonschema cannot apply: say so
        return {"valid": False, "error": f"jsonschema could not check it: "
                                         f"{type(exc).__name__}: {str(exc)[:200]}"}
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "(the answer)"
        return {"valid": False, "error": f"{where}: {error.message[:300]}"}
    return {"valid": True, "error": None}
