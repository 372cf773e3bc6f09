"""The shape of every message that crosses a process or file boundary, declared once.

Both ends of each channel import the same module here: :mod:`.request` (what an engine
decodes, and what it answers), :mod:`.embedding` (what an engine embeds, and its vectors),
:mod:`.output_format` (a format an answer is held to), :mod:`.context` (what the driver
sends with each request), :mod:`.engine` (a worker and its node's engine), :mod:`.stream` (a
worker and the driver's token hub), :mod:`.failure` (why a request failed, from which every
HTTP status and OpenAI error code is derived) and :mod:`.result` (why an answer ended, its
tokens, its provenance). Nothing here does work of its own; it imports only pydantic and
:mod:`hpc_chat.errors`, so every layer may use it.
"""
