"""The shape of every message that crosses a process or file boundary, declared once.

Both ends of each channel import the same module here: :mod:`.request` (what an engine
decodes), :mod:`.engine` (a worker and its node's engine), :mod:`.stream` (a worker and the
driver's token hub) and :mod:`.failure` (why a request failed, from which every HTTP status and
OpenAI error code is derived). Nothing here does any work; it imports only pydantic and
:mod:`hpc_chat.errors`, so every layer may use it.
"""
