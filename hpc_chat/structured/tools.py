"""Tool calls: OpenAI's ``tools`` and ``tool_choice`` as a format for the answer, and the
words that tell a model about its tools.

With ``tool_choice`` ``required`` or a named function, the answer is constrained to one call,
``{"name": ..., "arguments": {...}}``, whose ``arguments`` fit that function's ``parameters``
(each schema checked as a ``response_format``'s is: a keyword the grammar would not enforce is
refused, naming the tool). With ``auto`` the grammar allows either such a call (bare, or
wrapped in ``<tool_call>...</tool_call>`` as templates with tool syntax teach models to write
it) or plain text that begins with neither ``{`` nor ``<``; with ``none`` nothing is
constrained and the tools are not offered. One call per answer (``parallel_tool_calls`` is
accepted; a second call is never made).

How a model learns of its tools, and sees earlier calls and their results, is decided where the
prompt is made (:class:`hpc_chat.llm.template.ChatTemplate`), from the request's messages in
OpenAI's shape (an assistant turn with ``tool_calls``, ``role: tool`` turns):
- a GGUF chat template with tool syntax of its own (Qwen 2.5, Hermes, Llama 3.1, ...) is given
  the tools and those turns as they are, and writes them in its own markup;
- a template without any (the embedded SmolLM2's) gets the same words for every model: the
  tools listed in the system prompt (:func:`tools_prompt`), an earlier call as the assistant's
  JSON (:func:`call_text`) and a result as a user turn that names its call
  (:func:`result_text`) (:func:`as_text_turns`).
"""

from __future__ import annotations

import hashlib
import json
import re
from functools import lru_cache
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from hpc_chat.errors import FormatError
from hpc_chat.protocol.output_format import FormatKind, OutputFormat
from hpc_chat.protocol.request import stored_answer_mark
from hpc_chat.structured.converter import converter
from hpc_chat.structured.definitions import renamed_definitions
from hpc_chat.structured.keywords import SchemaRefused, unenforced

MAX_TOOLS = 64
# Plain text, when a tool need not be called: anything that begins with neither "{" nor "<".
TEXT_RULE = r'answer-text ::= [^{<\x00] [^\x00]*'
# A call wrapped as the templates with tool syntax teach (Hermes, Qwen 2.5): also enforced.
WRAPPED_RULE = r'wrapped-call ::= "<tool_call>" [ \t\n]* tool-call [ \t\n]* "</tool_call>"'
WRAPPED = re.compile(r"\s*<tool_call>\s*(.*?)\s*</tool_call>\s*", re.S)


class FunctionSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    description: str | None = None
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object",
                                                                "properties": {}})
    strict: bool | None = None


class ToolSpec(BaseModel):
    """One entry of OpenAI's ``tools``."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["function"]
    function: FunctionSpec


def parse_tools(tools: Any, tool_choice: Any) -> tuple[list[ToolSpec], str | None]:
    """The tools and the choice: ``none``, ``auto``, ``required``, or a function's name."""
    if not isinstance(tools, list) or not tools:
        raise FormatError("tools must be a non-empty list of functions", param="tools")
    if len(tools) > MAX_TOOLS:
        raise FormatError(f"tools: at most {MAX_TOOLS} functions", param="tools")
    specs = []
    for i, tool in enumerate(tools):
        try:
            specs.append(ToolSpec.model_validate(tool))
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(p) for p in err["loc"])
            raise FormatError(f"tools[{i}].{where}: {err['msg']}", param="tools") from None
    names = [t.function.name for t in specs]
    if len(set(names)) != len(names):
        raise FormatError("tools: two functions have the same name", param="tools")
    choice = "auto" if tool_choice is None else tool_choice
    if isinstance(choice, dict):
        name = (choice.get("function") or {}).get("name") if choice.get("type") == "function" \
            else None
        if name not in names:
            raise FormatError(f"tool_choice names the function {name!r}, which is not in "
                              f"tools ({', '.join(names)})", param="tool_choice")
        return specs, name
    if choice not in ("none", "auto", "required"):
        raise FormatError("tool_choice must be none, auto, required or "
                          "{\"type\": \"function\", \"function\": {\"name\": ...}}",
                          param="tool_choice")
    return specs, choice


def call_schema(tool: ToolSpec, parameters: dict[str, Any] | None = None) -> dict[str, Any]:
    """The JSON of one call to ``tool`` (with ``parameters`` in place of its own)."""
    return {"type": "object", "additionalProperties": False, "required": ["name", "arguments"],
            "properties": {"name": {"const": tool.function.name},
                           "arguments": tool.function.parameters if parameters is None
                           else parameters}}


def calls_schema(chosen: list[ToolSpec]) -> dict[str, Any]:
    """The JSON of one call to any of ``chosen``. Each tool's ``$defs`` move to the root,
    renamed apart (``$ref`` resolves from the root of the whole schema, and two tools may
    both define ``Item``)."""
    defs: dict[str, Any] = {}
    calls = []
    for i, tool in enumerate(chosen):
        parameters = renamed_definitions(tool.function.parameters, prefix=f"{i}-")
        defs.update(parameters.pop("$defs", {}))
        calls.append(call_schema(tool, parameters))
    schema = calls[0] if len(calls) == 1 else {"anyOf": calls}
    return {**schema, "$defs": defs} if defs else schema


def tools_format(tools: Any, tool_choice: Any) -> OutputFormat | None:
    """The format of an answer that may (``auto``) or must call a tool; None for ``none``.
    Compiled once per set of tools and choice (a batch whose lines share them compiles them
    once per process)."""
    try:
        key = json.dumps([tools, tool_choice], sort_keys=True)
    except (TypeError, ValueError):
        raise FormatError("tools must be JSON", param="tools") from None
    return _tools_format(key)


@lru_cache(maxsize=64)
def _tools_format(key: str) -> OutputFormat | None:
    tools, tool_choice = json.loads(key)
    specs, choice = parse_tools(tools, tool_choice)
    if choice == "none":
        return None
    for i, tool in enumerate(specs):
        try:
            unenforced(tool.function.parameters)
        except SchemaRefused as exc:
            raise FormatError(f"tools[{i}].function.parameters"
                              f"{str(exc).removeprefix('schema')}", param="tools") from None
    chosen = [t for t in specs if choice in ("auto", "required") or t.function.name == choice]
    schema = calls_schema(chosen)
    try:
        gbnf = converter().json_schema_to_gbnf(json.dumps(schema))
    except Exception as exc:  # noqa: BLE001 - whatever the converter raises: refused
        raise FormatError(f"tools: llama.cpp's converter cannot turn the parameters into a "
                          f"grammar ({str(exc)[:200]})", param="tools") from None
    optional = choice == "auto"
    if optional:  # a call (bare or wrapped), or text: the call's own root renamed
        gbnf = re.sub(r"(?m)^root ::=", "tool-call ::=", gbnf, count=1) + \
            f"\nroot ::= tool-call | wrapped-call | answer-text\n{WRAPPED_RULE}\n{TEXT_RULE}"
    canonical = json.dumps({"schema": schema, "optional": optional}, sort_keys=True)
    return OutputFormat(kind=FormatKind.TOOLS, gbnf=gbnf, json_schema=schema,
                        text_allowed=optional, name=None if optional else str(choice),
                        sha256=hashlib.sha256(canonical.encode()).hexdigest())


def offered_tools(tools: Any, tool_choice: Any) -> list[dict[str, Any]] | None:
    """The tools a request offers the model, checked, in OpenAI's shape (None when it offers
    none: no ``tools``, or ``tool_choice`` ``none``)."""
    if not tools:
        return None
    specs, choice = parse_tools(tools, tool_choice)
    if choice == "none":
        return None
    return [t.model_dump(exclude_none=True) for t in specs]


def tools_prompt(tools: list[dict[str, Any]], optional: bool) -> str:
    """What the system prompt says of the offered tools, for a template without tool syntax
    (``optional``: the model may answer in text instead)."""
    lines = ["You can call these functions:"]
    for t in tools:
        fn = t["function"]
        about = f": {fn['description']}" if fn.get("description") else ""
        lines.append(f"- {fn['name']}{about} Arguments (JSON Schema): "
                     f"{json.dumps(fn.get('parameters', {}), ensure_ascii=False)}")
    how = "To call one, answer with only" if optional else "Answer with only"
    lines.append(f'{how} a JSON object {{"name": <function name>, "arguments": {{...}}}}.')
    return "\n".join(lines)


def as_text_turns(messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None,
                  optional: bool) -> list[dict[str, str]]:
    """The messages for a template without tool syntax: plain ``{"role", "content"}`` turns,
    the tools described in the system prompt, each earlier call written as the JSON the model
    writes for one, and each result as a user turn that names its call."""
    names: dict[str, str] = {}  # a call's id -> its function's name
    out: list[dict[str, str]] = []
    for msg in messages:
        role, content = msg["role"], msg.get("content") or ""
        if role == "assistant" and msg.get("tool_calls"):
            calls = []
            for call in msg["tool_calls"]:
                names[call.get("id", "")] = call["function"]["name"]
                calls.append(call_text(call["function"]["name"], call["function"]["arguments"]))
            out.append({"role": "assistant", "content": "\n".join(calls)})
        elif role == "tool":
            call_id = msg.get("tool_call_id")
            out.append({"role": "user", "content": result_text(
                msg.get("name") or names.get(call_id or ""), call_id, content)})
        else:
            out.append({"role": role, "content": content, **stored_answer_mark(msg)})
    if tools:
        offered = tools_prompt(tools, optional)
        if out and out[0]["role"] == "system":
            base = out[0]["content"]
            out[0] = {"role": "system", "content": f"{base}\n\n{offered}" if base else offered}
        else:
            out.insert(0, {"role": "system", "content": offered})
    return out


def as_template_turns(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The messages for a template with tool syntax: as given, each call's ``arguments`` a
    JSON object (chat templates, written for Hugging Face's, render it with ``tojson``)."""
    out = []
    for msg in messages:
        if msg.get("role") == "assistant" and msg.get("tool_calls"):
            calls = []
            for call in msg["tool_calls"]:
                fn = call["function"]
                arguments = fn["arguments"]
                if isinstance(arguments, str):
                    try:
                        arguments = json.loads(arguments)
                    except ValueError:
                        pass
                calls.append({**call, "function": {**fn, "arguments": arguments}})
            msg = {**msg, "tool_calls": calls}
        out.append(msg)
    return out


def turn_text(msg: dict[str, Any]) -> str:
    """A turn's text, for counting its tokens before the template is known: its content, or
    its calls as the JSON a model writes for them."""
    calls = [call_text(c["function"]["name"], c["function"]["arguments"])
             for c in msg.get("tool_calls") or []]
    return "\n".join([msg.get("content") or "", *calls])


def unwrap_call(text: str) -> str:
    """An answer without the ``<tool_call>...</tool_call>`` around a call, if it has them."""
    wrapped = WRAPPED.fullmatch(text)
    return wrapped.group(1) if wrapped else text


def parse_call(text: str) -> tuple[str, dict[str, Any]] | None:
    """The call an answer makes, bare or wrapped in ``<tool_call>``: (function name,
    arguments), or None for a text answer."""
    text = unwrap_call(text)
    if not text.lstrip().startswith("{"):
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    if isinstance(value, dict) and isinstance(value.get("name"), str) and \
            isinstance(value.get("arguments"), dict):
        return value["name"], value["arguments"]
    return None


def call_text(name: str, arguments: str | dict[str, Any]) -> str:
    """An earlier call, as the assistant's turn: the JSON the model writes for a call."""
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except ValueError:
            pass
    return json.dumps({"name": name, "arguments": arguments}, ensure_ascii=False)


def result_text(name: str | None, call_id: str | None, content: str) -> str:
    """A tool's result, as the user turn that gives it to the model."""
    return f"Result of the call {call_id or ''} to {name or 'the function'}:\n{content}"
