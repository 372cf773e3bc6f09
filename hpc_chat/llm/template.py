"""A model's chat template: messages and tools into the prompt text.

The template is the GGUF's own (``tokenizer.chat_template``), rendered as llama-cpp-python
renders it (its ``Jinja2ChatFormatter``), so the unbatched and batched engines make the same
prompt. Tools and the turns of a tool call reach the model one of two ways, decided once per
template by rendering a probe conversation (:func:`has_tool_syntax`):

- a template with tool syntax of its own (it lists ``tools``, writes an assistant's
  ``tool_calls`` and ``role: tool`` results: Qwen 2.5, Hermes, Llama 3.1 and others) gets them
  as they are, as llama-server's ``--jinja`` gives them;
- any other template (the embedded SmolLM2's) gets plain turns and the tools described in the
  system prompt (:func:`hpc_chat.structured.tools.as_text_turns`).

Either way the answer is held to the same grammar (a JSON call, ``{"name", "arguments"}``);
only what the model reads differs.
"""

from __future__ import annotations

from typing import Any

from hpc_chat.structured.tools import as_template_turns, as_text_turns

_PROBE_TOOL = {"type": "function", "function": {
    "name": "hpc_chat_probe_fn", "description": "hpc_chat_probe_about",
    "parameters": {"type": "object", "properties": {"hpc_chat_probe_arg": {"type": "string"}}}}}
_PROBE_TURNS = [
    {"role": "system", "content": "s"},
    {"role": "user", "content": "u"},
    {"role": "assistant", "content": "", "tool_calls": [{
        "id": "call_probe", "type": "function",
        "function": {"name": "hpc_chat_probe_fn",
                     "arguments": '{"hpc_chat_probe_arg": "hpc_chat_probe_value"}'}}]},
    {"role": "tool", "tool_call_id": "call_probe", "name": "hpc_chat_probe_fn",
     "content": "hpc_chat_probe_result"},
]


def has_tool_syntax(render) -> bool:
    """Whether a template (``render(messages, tools) -> str``) writes the tools it is given,
    an earlier call and its result: all three, or it is not used for tools."""
    try:
        text = render(as_template_turns(_PROBE_TURNS), [_PROBE_TOOL])
    except Exception:  # noqa: BLE001 - a template that cannot render tool turns has no syntax
        return False
    return all(mark in text for mark in ("hpc_chat_probe_about", "hpc_chat_probe_value",
                                         "hpc_chat_probe_result"))


class ChatTemplate:
    """One model's chat template, and whether it has tool syntax (probed once)."""

    def __init__(self, template: str, *, eos_token: str, bos_token: str):
        from llama_cpp import llama_chat_format  # the engines' side only

        self.formatter = llama_chat_format.Jinja2ChatFormatter(
            template=template, eos_token=eos_token, bos_token=bos_token)
        self.tool_syntax = has_tool_syntax(
            lambda messages, tools: self.formatter(messages=messages, tools=tools).prompt)

    @property
    def stops(self) -> list[str]:
        """What the template ends an assistant turn with: generation stops there."""
        stop = self.formatter(messages=[{"role": "user", "content": "x"}]).stop
        return [stop] if isinstance(stop, str) else list(stop or [])

    def messages_for(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None,
                     optional: bool = False
                     ) -> tuple[list[dict[str, Any]], list[dict[str, Any]] | None]:
        """The messages and the ``tools`` argument the template is rendered with
        (``optional``: the model may answer in text instead of calling)."""
        if self.tool_syntax:
            return as_template_turns(messages), tools or None
        return as_text_turns(messages, tools, optional), None

    def prompt(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None,
               optional: bool = False) -> str:
        msgs, offered = self.messages_for(messages, tools, optional)
        return self.formatter(messages=msgs, tools=offered).prompt

    def chat_handler(self):
        """llama-cpp-python's chat handler for this template (the unbatched engine's)."""
        return self.formatter.to_chat_handler()
