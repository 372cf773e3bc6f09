"""Batches: a file of prompts in, one answer line per prompt out, resumable.

:mod:`.files` (input and output lines, native and OpenAI), :mod:`.run` (one run: resume, bad
lines, Globus state), :mod:`.through_server` (a batch answered by a running ``serve``) and
:mod:`.replay` (a recorded answer made again from its provenance).
"""
