"""llama.cpp's JSON Schema to GBNF converter, loaded without the native library.

The converter is ``llama_cpp/llama_grammar.py``, the port llama-cpp-python ships of llama.cpp's
``json_schema_to_grammar``. That file is pure Python; it is loaded by its path, without the
``llama_cpp`` package around it, so a driver on a login node checks a schema without loading
the native library (or a GPU build's CUDA libraries). Its JSON string rule is tightened as
llama.cpp's newer converter has it: no raw control character inside a string, which strict
JSON parsers refuse.
"""

from __future__ import annotations

import importlib.util
from functools import lru_cache
from pathlib import Path
from types import ModuleType

from hpc_chat.errors import FormatError

# A JSON string's character: no quote, backslash or control character unescaped.
STRICT_CHAR = (r'[^"\\\x7F\x00-\x1F] | "\\" (["\\/bfnrt] | "u" [0-9a-fA-F] [0-9a-fA-F] '
               r'[0-9a-fA-F] [0-9a-fA-F])')


@lru_cache(maxsize=1)
def converter() -> ModuleType:
    spec = importlib.util.find_spec("llama_cpp")
    if spec is None or not spec.submodule_search_locations:
        raise FormatError("structured outputs need llama-cpp-python installed (its JSON "
                          "Schema converter)")
    path = Path(next(iter(spec.submodule_search_locations))) / "llama_grammar.py"
    loader = importlib.util.spec_from_file_location("hpc_chat_llama_grammar", path)
    module = importlib.util.module_from_spec(loader)
    loader.loader.exec_module(module)
    module.PRIMITIVE_RULES["char"] = module.BuiltinRule(STRICT_CHAR, [])
    return module


