"""The code's shape rules that import-linter does not check: short modules with one job."""

from __future__ import annotations

from pathlib import Path

import hpc_chat

MAX_LINES = 400


def test_no_module_is_over_400_lines():
    root = Path(hpc_chat.__file__).parent
    long = {str(p.relative_to(root)): n for p in sorted(root.rglob("*.py"))
            if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert long == {}, f"split these modules (over {MAX_LINES} lines): {long}"
