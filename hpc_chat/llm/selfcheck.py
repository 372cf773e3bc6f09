"""``python -m hpc_chat.llm.selfcheck``: can this llama.cpp build run on this CPU?

A llama.cpp built with ``-march=native`` on one machine can die with SIGILL on another (and on
some virtual machines that advertise AMX but do not enable it). ``make install`` runs this check
in a child process and rebuilds llama-cpp-python with portable flags when it fails.
"""

from __future__ import annotations

import subprocess
import sys

PROBE = """
from hpc_chat.llm.registry import get_engine
from hpc_chat.llm.models import ModelSpec, resolve_model
engine, _ = get_engine(ModelSpec(path=str(resolve_model('default')), n_ctx=256, n_threads=1))
out = engine.chat([{'role': 'user', 'content': 'Hi'}], temperature=0.0, max_tokens=2)
print('ok', out.completion_tokens)
"""


def main() -> int:
    proc = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True)
    if proc.returncode == 0 and proc.stdout.startswith("ok"):
        print("llama.cpp self-check: ok")
        return 0
    reason = f"signal {-proc.returncode}" if proc.returncode < 0 else f"exit {proc.returncode}"
    print(f"llama.cpp self-check failed ({reason}); stderr tail:\n{proc.stderr[-800:]}",
          file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
