"""llama.cpp's grammar sampler for one sequence, parsed once per grammar and cloned per request.

Parsing a GBNF grammar and building its stacks is done by llama.cpp when a grammar sampler is
made; a batch of a million lines with one schema would do it a million times. Here each
distinct grammar (by the sha256 of its text) is parsed once per engine into a template
sampler, and every sequence that needs it gets a clone (``llama_sampler_clone`` copies the
parsed grammar and its state), which the sequence's sampler chain then owns and frees. A
grammar llama.cpp cannot parse gives a NULL sampler: that request is refused
(:class:`~hpc_chat.errors.FormatError`) before anything is decoded, and the others go on.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict

from hpc_chat.errors import FormatError
from hpc_chat.protocol.output_format import FormatKind, OutputFormat

TEMPLATES = 32  # distinct grammars kept parsed per engine
PARAM_OF = {FormatKind.GRAMMAR: "grammar", FormatKind.TOOLS: "tools"}


class GrammarSamplers:
    """Parsed grammars of one vocabulary, least recently used dropped first."""

    def __init__(self, llama_cpp, vocab):
        self.lc, self.vocab = llama_cpp, vocab
        self.templates: OrderedDict[str, object] = OrderedDict()
        self.parsed = 0  # how many grammars were parsed: the cache's test reads it
        self.lock = threading.Lock()

    def new(self, fmt: OutputFormat):
        """A fresh grammar sampler for one sequence (the caller's chain takes ownership)."""
        with self.lock:
            key = hashlib.sha256(fmt.gbnf.encode("utf-8")).hexdigest()  # the grammar's own
            template = self.templates.get(key)
            if template is None:
                template = self.lc.llama_sampler_init_grammar(
                    self.vocab, fmt.gbnf.encode("utf-8"), b"root")
                if not template:
                    param = PARAM_OF.get(fmt.kind, "response_format")
                    raise FormatError(f"{param}: llama.cpp could not parse the grammar (its "
                                      f"root rule must be named 'root'; GBNF is described in "
                                      f"llama.cpp's grammars/README.md)", param=param)
                self.parsed += 1
                self.templates[key] = template
                while len(self.templates) > TEMPLATES:
                    _, old = self.templates.popitem(last=False)
                    self.lc.llama_sampler_free(old)
            self.templates.move_to_end(key)
            return self.lc.llama_sampler_clone(template)

    def check(self, fmt: OutputFormat) -> None:
        """Raise :class:`FormatError` when llama.cpp cannot parse ``fmt``'s grammar."""
        self.lc.llama_sampler_free(self.new(fmt))

    def close(self) -> None:
        with self.lock:
            for sampler in self.templates.values():
                self.lc.llama_sampler_free(sampler)
            self.templates.clear()
