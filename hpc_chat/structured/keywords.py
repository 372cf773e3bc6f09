"""Which JSON Schema keywords the grammar enforces, and a check that refuses any other.

llama.cpp's converter (:mod:`hpc_chat.structured.compile`) reads a schema node by the first
rule that matches it (a ``$ref``, then ``anyOf``, a list of types, ``const``, ``enum``, an
object's properties, an array's items, a string's ``pattern``, ``format``, or length, a plain
type) and ignores every other keyword of that node. A keyword it ignores would be a constraint
the answer need not meet, so :func:`unenforced` walks the schema as the converter will and
names the first such keyword with its path; the request is refused before anything is decoded.
Keywords that only describe (``title``, ``description``, ``default``, ...) are always allowed.
"""

from __future__ import annotations

from typing import Any

DESCRIPTIVE = {"title", "description", "default", "examples", "$schema", "$id", "$comment",
               "readOnly", "writeOnly", "deprecated"}
DEFINITIONS = ("$defs", "definitions")
TYPES = {"string", "number", "integer", "boolean", "null", "object", "array"}
FORMATS = {"date", "time", "date-time", "uuid", "uuid1", "uuid2", "uuid3", "uuid4", "uuid5"}
MAX_DEPTH = 32
UNSAFE_IN_PATTERN = ("\\", ".", "[^")  # the converter passes them through unchecked
RENAMED_DEF = "def--"  # what compile renames definitions to (no rule name may collide)
JSON_TYPES = {"string": (str,), "number": (int, float), "integer": (int,), "boolean": (bool,),
              "null": (type(None),), "object": (dict,), "array": (list,)}


class SchemaRefused(ValueError):
    """A schema the grammar cannot enforce; the message names the keyword and where it is."""


def unenforced(schema: Any) -> None:
    """Raise :class:`SchemaRefused` naming the first keyword of ``schema`` that the grammar
    would not enforce (or the first value that is no schema at all)."""
    if not isinstance(schema, dict):
        raise SchemaRefused("the schema must be a JSON object")
    try:
        _node(schema, "schema", 0, schema)
        for key in DEFINITIONS:
            defs = schema.get(key, {})
            if not isinstance(defs, dict):
                raise SchemaRefused(f"schema.{key} must be an object of schemas")
            for name, sub in defs.items():
                _node(sub, f"schema.{key}.{name}", 1, schema)
    except SchemaRefused:
        raise
    except (TypeError, ValueError, AttributeError, KeyError) as exc:  # a value of a wrong type
        raise SchemaRefused(f"schema: a keyword has a value of the wrong type ({exc})") from None


def _node(node: Any, path: str, depth: int, root: dict) -> None:
    if depth > MAX_DEPTH:
        raise SchemaRefused(f"{path}: the schema nests deeper than {MAX_DEPTH} levels")
    if not isinstance(node, dict):
        raise SchemaRefused(f"{path}: a schema must be an object here (true/false schemas are "
                            f"not enforced)")
    keys = set(node) - DESCRIPTIVE - set(DEFINITIONS if depth == 0 else ())
    kind = node.get("type")

    def only(*used: str, children: tuple[tuple[str, Any], ...] = ()) -> None:
        extra = sorted(keys - set(used))
        if extra:
            raise SchemaRefused(f"{path}: the keyword {extra[0]!r} is not enforced by the "
                                f"grammar {_beside(used, keys)}; remove it (or enforce it "
                                f"after decoding yourself)")
        for where, child in children:
            _node(child, where, depth + 1, root)

    if "$ref" in node:
        ref = node["$ref"]
        parts = ref.split("/") if isinstance(ref, str) else []
        if len(parts) != 3 or parts[0] != "#" or parts[1] not in DEFINITIONS or \
                not isinstance(root.get(parts[1]), dict) or parts[2] not in root[parts[1]]:
            raise SchemaRefused(f"{path}.$ref: only references to this schema's own "
                                f"definitions (\"#/$defs/NAME\") are followed, not {ref!r}")
        return only("$ref")
    if "oneOf" in node:
        raise SchemaRefused(f"{path}: the keyword 'oneOf' is not enforced (the grammar cannot "
                            f"exclude an answer that fits two alternatives); use 'anyOf'")
    if "anyOf" in node:
        alts = node["anyOf"]
        if not isinstance(alts, list) or not alts:
            raise SchemaRefused(f"{path}.anyOf must be a non-empty list of schemas")
        return only("anyOf", children=tuple((f"{path}.anyOf[{i}]", a)
                                            for i, a in enumerate(alts)))
    if isinstance(kind, list):
        bad = [t for t in kind if t not in TYPES]
        if bad or not kind:
            raise SchemaRefused(f"{path}.type: {bad[0] if bad else '[]'!r} is not a JSON type")
        return only("type")
    if kind is not None and kind not in TYPES:
        raise SchemaRefused(f"{path}.type: {kind!r} is not a JSON type")
    if "const" in node:
        _of_type(node["const"], kind, f"{path}.const")
        return only("const", "type")
    if "enum" in node:
        if not isinstance(node["enum"], list) or not node["enum"]:
            raise SchemaRefused(f"{path}.enum must be a non-empty list")
        for i, value in enumerate(node["enum"]):
            _of_type(value, kind, f"{path}.enum[{i}]")
        return only("enum", "type")
    if kind in (None, "object") and ("properties" in node or node.get(
            "additionalProperties", True) is not True):
        return _object(node, path, only)
    if "allOf" in node:
        raise SchemaRefused(f"{path}: the keyword 'allOf' is not enforced; write the merged "
                            f"schema out")
    if kind in (None, "array") and ("items" in node or "prefixItems" in node):
        return _array(node, path, only)
    if kind in (None, "string") and "pattern" in node:
        pattern = node["pattern"]
        if not isinstance(pattern, str) or not (pattern.startswith("^")
                                                and pattern.endswith("$")):
            raise SchemaRefused(f"{path}.pattern must be a string anchored with ^ and $")
        if any(c in pattern for c in UNSAFE_IN_PATTERN):
            raise SchemaRefused(f"{path}.pattern: backslash escapes, '.' and negated classes "
                                f"'[^...]' are not enforced inside a JSON string; write "
                                f"classes such as [0-9] or [A-Za-z_]")
        return only("pattern", "type")
    if kind in (None, "string") and "format" in node:
        if node["format"] not in FORMATS:
            raise SchemaRefused(f"{path}.format: {node['format']!r} is not enforced; the "
                                f"enforced formats are {', '.join(sorted(FORMATS))}")
        return only("format", "type")
    if kind == "string" and ("minLength" in node or "maxLength" in node):
        _counts(node, path, "minLength", "maxLength")
        return only("type", "minLength", "maxLength")
    return only("type")


def _object(node: dict, path: str, only) -> None:
    props = node.get("properties", {})
    if not isinstance(props, dict):
        raise SchemaRefused(f"{path}.properties must be an object of schemas")
    required = node.get("required", [])
    if not isinstance(required, list) or not all(isinstance(r, str) for r in required):
        raise SchemaRefused(f"{path}.required must be a list of property names")
    odd = [k for k in props if k == "*" or k.startswith(RENAMED_DEF)]
    if odd:
        raise SchemaRefused(f"{path}.properties: a property may not be named {odd[0]!r} "
                            f"(the converter uses that name itself)")
    missing = [r for r in required if r not in props]
    if missing:
        raise SchemaRefused(f"{path}.required names {missing[0]!r}, which is not in "
                            f"{path}.properties")
    children = [(f"{path}.properties.{k}", v) for k, v in props.items()]
    extra = node.get("additionalProperties")
    if isinstance(extra, dict):
        children.append((f"{path}.additionalProperties", extra))
    elif extra is not None and not isinstance(extra, bool):
        raise SchemaRefused(f"{path}.additionalProperties must be true, false or a schema")
    only("type", "properties", "required", "additionalProperties", children=tuple(children))


def _array(node: dict, path: str, only) -> None:
    items = node.get("items") if "items" in node else node["prefixItems"]
    if "items" in node and "prefixItems" in node:
        raise SchemaRefused(f"{path}: 'prefixItems' beside 'items' is not enforced; give one")
    if isinstance(items, list):  # a tuple: its length is the list's
        if "items" in node:
            raise SchemaRefused(f"{path}.items: a list of schemas (a tuple) is draft-07; write "
                                f"it as prefixItems")
        return only("type", "prefixItems",
                    children=tuple((f"{path}.prefixItems[{i}]", s) for i, s in enumerate(items)))
    _counts(node, path, "minItems", "maxItems")
    only("type", "items", "minItems", "maxItems", children=((f"{path}.items", items),))


def _counts(node: dict, path: str, low: str, high: str) -> None:
    for key in (low, high):
        value = node.get(key)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool)
                                  or not 0 <= value <= 1000):
            raise SchemaRefused(f"{path}.{key} must be an integer from 0 to 1000")
    if node.get(high) is not None and node.get(low, 0) > node[high]:
        raise SchemaRefused(f"{path}: {low} is above {high}")


def _of_type(value: Any, kind: Any, where: str) -> None:
    """An enum or const value must be of the node's ``type``: the grammar writes the value,
    whatever the type says."""
    if not isinstance(kind, str) or kind not in JSON_TYPES:
        return
    fits = isinstance(value, JSON_TYPES[kind]) and not (
        isinstance(value, bool) and kind in ("number", "integer"))
    if kind == "integer" and isinstance(value, float):
        fits = value.is_integer()
    if not fits:
        raise SchemaRefused(f"{where}: {value!r} is not of the type {kind!r} given beside it")


def _beside(used: tuple[str, ...], keys: set[str]) -> str:
    """Which rule the converter took for this node, in words."""
    head = next((k for k in used if k in keys), "type")
    return f"beside {head!r}" if head != "type" else "here"
