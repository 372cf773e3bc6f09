"""Structured outputs: a request's ``response_format`` or ``grammar`` turned into the grammar one
sequence is decoded under, and the answer checked against its schema afterwards.

:mod:`.keywords` says which JSON Schema keywords the grammar enforces and refuses a schema
that uses any other (fail closed: never a schema silently dropped), :mod:`.compile` turns a
request's format into an :class:`~hpc_chat.protocol.output_format.OutputFormat` with
llama.cpp's own JSON-Schema-to-GBNF converter (cached per schema), :mod:`.validate` checks a
decoded answer with ``jsonschema``, and :mod:`.instance` writes the smallest answer a schema
accepts, for the ``echo`` model.
"""
