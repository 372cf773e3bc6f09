"""`hpc-chat models convert`: the embedded model in another weight format, by llama.cpp's own
quantizer, as a user runs it."""

from __future__ import annotations

import stat

import pytest

from hpc_chat.llm.convert import file_type, type_name
from hpc_chat.llm.engine import ChatEngine
from hpc_chat.llm.models import ModelSpec
from tests.helpers.cli import hpc

pytestmark = pytest.mark.model


def convert(home, *args):
    return hpc(home, "models", "convert", *args, model=None, config=None, timeout=300)


def test_the_embedded_model_converts_to_q4_0_and_answers(tmp_path):
    home = tmp_path / "home"
    out = convert(home, "default", "--to", "q4_0")
    assert out.returncode == 0, out.stderr
    target = home / "models" / "SmolLM2-135M-Instruct.Q4_1.q4_0.gguf"
    assert f"wrote {target}" in out.stdout
    assert "already quantized (q4_1)" in out.stdout  # requantized, and said so
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert type_name(file_type(target)) == "q4_0"
    assert not [p for p in target.parent.iterdir() if p.name.endswith(".part")]
    engine = ChatEngine(ModelSpec(path=str(target), n_threads=2))
    answer = engine.chat([{"role": "user", "content": "Say hello."}], temperature=0.0,
                         max_tokens=8)
    assert answer.completion_tokens > 0 and answer.text

    again = convert(home, "default", "--to", "q4_0")
    assert again.returncode == 2 and "exists; pass --force" in again.stderr
    assert "Traceback" not in again.stderr


def test_a_link_at_the_output_and_a_model_without_weights_are_refused(tmp_path):
    home = tmp_path / "home"
    planted = tmp_path / "victim"
    planted.write_text("keep me")
    link = tmp_path / "out.gguf"
    link.symlink_to(planted)
    out = convert(home, "default", "--to", "iq4_nl", "-o", str(link), "--force")
    assert out.returncode == 2 and "is a link" in out.stderr
    assert planted.read_text() == "keep me"
    echo = convert(home, "echo", "--to", "q4_0")
    assert echo.returncode == 2 and "no weights to convert" in echo.stderr
    bad = convert(home, "default", "--to", "q3_k")
    assert bad.returncode == 2 and "q4_0" in bad.stderr  # click lists the choices
