"""A model file in another weight format, made by llama.cpp's own quantizer.

The embedded model is Q4_1, a format with no repacked CPU kernels in llama.cpp; Q4_0 and IQ4_NL
have AVX2 kernels that decode a plain loop about 1.28x faster here (docs/performance.md). A user
makes such a file with ``hpc-chat models convert NAME --to q4_0``: llama.cpp's
``llama_model_quantize``, from an F32/F16/BF16 source, or requantized from an already quantized
one, which loses a little more (said once, as a warning). The quality lost is measured, not
assumed: ``hpc-chat bench --only formats`` gives each format's tokens/s and its perplexity on a
shipped public-domain text, in the same run.

The file is written in a directory of the user's own (0700, made beside the output), made
0600 and renamed into place when complete, so a failed or interrupted conversion leaves nothing
half-written, and no link planted at the output's name or beside it is followed.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from hpc_chat.errors import ConfigError

FORMATS = {  # what --to takes: llama.cpp's file type
    "q4_0": "LLAMA_FTYPE_MOSTLY_Q4_0",
    "iq4_nl": "LLAMA_FTYPE_MOSTLY_IQ4_NL",
    "q8_0": "LLAMA_FTYPE_MOSTLY_Q8_0",
}
UNQUANTIZED = {0: "f32", 1: "f16", 32: "bf16"}  # general.file_type values of a source


@dataclass
class Converted:
    source: Path
    output: Path
    source_type: str
    requantized: bool
    bytes: int


def file_type(path: Path) -> int | None:
    """The GGUF's ``general.file_type`` (llama.cpp's ftype), read without loading weights."""
    import ctypes

    import llama_cpp

    params = llama_cpp.llama_model_default_params()
    params.vocab_only = True
    model = llama_cpp.llama_model_load_from_file(str(path).encode(), params)
    if not model:
        raise ConfigError(f"{path}: llama.cpp cannot read this file as a GGUF model")
    try:
        buf = ctypes.create_string_buffer(64)
        n = llama_cpp.llama_model_meta_val_str(model, b"general.file_type", buf, len(buf))
        return int(buf.value) if n > 0 and buf.value.isdigit() else None
    finally:
        llama_cpp.llama_model_free(model)


def type_name(ftype: int | None) -> str:
    import llama_cpp

    if ftype in UNQUANTIZED:
        return UNQUANTIZED[ftype]
    for name in dir(llama_cpp):
        if name.startswith("LLAMA_FTYPE_MOSTLY_") and getattr(llama_cpp, name) == ftype:
            return name.removeprefix("LLAMA_FTYPE_MOSTLY_").lower()
    return "unknown"


def convert(source: Path, to: str, output: Path, *, force: bool = False,
            threads: int | None = None) -> Converted:
    """Write ``source`` in format ``to`` (a key of :data:`FORMATS`) at ``output``."""
    import ctypes

    import llama_cpp

    if to not in FORMATS:
        raise ConfigError(f"--to {to!r}: not a format this command makes; choose one of "
                          f"{', '.join(FORMATS)}")
    if output.resolve() == source.resolve():
        raise ConfigError(f"{output}: that is the source file; choose another output")
    if (output.exists() or output.is_symlink()) and not force:
        raise ConfigError(f"{output} exists; pass --force to replace it")
    if output.is_symlink():
        raise ConfigError(f"{output} is a link: remove it, or choose another output")
    from llama_cpp._logger import set_verbose  # the one switch llama-cpp-python has

    from hpc_chat.llm.engine import debug_enabled

    set_verbose(debug_enabled())  # llama.cpp's load and quantize log only with --debug
    source_ftype = file_type(source)
    requantized = source_ftype not in UNQUANTIZED
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, FORMATS[to])
    params.allow_requantize = requantized
    params.nthread = threads or len(os.sched_getaffinity(0))
    try:  # a directory of our own (0700) beside the output: nobody can swap the file in it
        work = Path(tempfile.mkdtemp(prefix=f".{output.name}.", dir=output.parent))
    except OSError as exc:
        raise ConfigError(f"{output.parent}: cannot write the converted model there: "
                          f"{exc.strerror or exc}") from None
    tmp = work / "model.gguf"
    try:
        rc = llama_cpp.llama_model_quantize(str(source).encode(), str(tmp).encode(),
                                            ctypes.byref(params))
        if rc != 0 or not tmp.is_file():
            raise ConfigError(f"{source}: llama.cpp's quantizer failed (code {rc}) making "
                              f"{to}; run with --debug for its messages")
        tmp.chmod(0o600)
        os.replace(tmp, output)
    except OSError as exc:
        raise ConfigError(f"{output}: cannot write it: {exc.strerror or exc}") from None
    finally:
        tmp.unlink(missing_ok=True)
        work.rmdir()
    return Converted(source, output, type_name(source_ftype), requantized,
                     output.stat().st_size)
