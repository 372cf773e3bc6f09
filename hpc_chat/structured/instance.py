"""The smallest JSON value a schema accepts, its strings taken from given words: what the
``echo`` model answers under a format, so tests of the plumbing need no real model.

It follows the keywords :mod:`hpc_chat.structured.keywords` lets through, which are the ones
the grammar enforces: required properties only, the first alternative of ``anyOf``, the first
``enum`` value, ``minItems`` items, a string of the words (cut to ``maxLength``, padded to
``minLength``). A ``pattern`` or ``format`` string gets a fixed example that fits the common
cases; :func:`hpc_chat.structured.validate.check` still says whether it does.
"""

from __future__ import annotations

from itertools import cycle
from typing import Any

FORMAT_EXAMPLES = {"date": "2026-01-01", "time": "12:00:00Z", "date-time": "2026-01-01T12:00:00Z"}
UUID = "00000000-0000-4000-8000-000000000000"


def instance(schema: dict[str, Any], words: list[str]) -> Any:
    """A value for ``schema`` (an enforced schema: see the module docstring)."""
    feed = cycle(words or ["echo"])
    return _value(schema, schema, feed, 0)


def _value(node: dict[str, Any], root: dict[str, Any], words, depth: int) -> Any:
    if depth > 40:
        return None
    if "$ref" in node:
        target: Any = root
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        return _value(target, root, words, depth + 1)
    if "anyOf" in node:
        return _value(node["anyOf"][0], root, words, depth + 1)
    if "const" in node:
        return node["const"]
    if "enum" in node:
        return node["enum"][0]
    kind = node.get("type")
    if isinstance(kind, list):
        kind = kind[0]
    if kind == "object" or (kind is None and "properties" in node):
        props = node.get("properties", {})
        return {k: _value(props[k], root, words, depth + 1) for k in node.get("required", [])}
    if kind == "array" or (kind is None and ("items" in node or "prefixItems" in node)):
        items = node.get("items", node.get("prefixItems"))
        if isinstance(items, list):
            return [_value(s, root, words, depth + 1) for s in items]
        return [_value(items or {}, root, words, depth + 1)
                for _ in range(node.get("minItems", 0))]
    if kind == "string":
        if "format" in node:
            return UUID if node["format"].startswith("uuid") else \
                FORMAT_EXAMPLES[node["format"]]
        text = next(words)
        low, high = node.get("minLength", 0), node.get("maxLength")
        text = text.ljust(low, "x")
        return text[:high] if high is not None else text
    if kind in ("number", "integer"):
        return 0
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    return {}
