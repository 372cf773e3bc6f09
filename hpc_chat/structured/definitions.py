"""A schema's definitions renamed before llama.cpp's converter sees them."""

from __future__ import annotations

from typing import Any

from hpc_chat.structured.keywords import RENAMED_DEF


def renamed_definitions(schema: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """The schema with its definitions renamed ``def--N`` (and their ``$ref``s with them):
    the converter names a definition's rule after its key and reuses any rule of that name,
    so a definition called like a property (or ``string``) would take that rule's place.
    ``prefix`` keeps the definitions of several schemas apart when they are joined (a call to
    one of several tools: :mod:`hpc_chat.structured.tools`)."""
    names = {f"#/{key}/{name}": f"#/$defs/{RENAMED_DEF}{prefix}{i}"
             for key in ("$defs", "definitions") if isinstance(schema.get(key), dict)
             for i, name in enumerate(schema[key], start=len(schema.get("$defs", {}))
                                      if key == "definitions" else 0)}
    if not names:
        return schema

    def walk(node: Any) -> Any:
        if isinstance(node, list):
            return [walk(x) for x in node]
        if not isinstance(node, dict):
            return node
        return {k: names.get(v, v) if k == "$ref" and isinstance(v, str) else walk(v)
                for k, v in node.items()}

    # Definitions sit at the root only (keywords refuses them deeper); a property may well be
    # named "definitions", so nothing else is dropped.
    renamed = {k: walk(v) for k, v in schema.items() if k not in ("$defs", "definitions")}
    renamed["$defs"] = {names[f"#/{key}/{name}"].rsplit("/", 1)[1]: walk(sub)
                        for key in ("$defs", "definitions")
                        if isinstance(schema.get(key), dict)
                        for name, sub in schema[key].items()}
    return renamed
