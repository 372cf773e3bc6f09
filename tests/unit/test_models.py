"""Model resolution: the embedded default, aliases, paths, and errors that list what exists."""

import pytest

from hpc_chat.errors import ModelNotFoundError
from hpc_chat.llm.models import available_models, embedded_model_path, resolve_model


def test_default_is_the_embedded_smollm2():
    path = embedded_model_path()
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert path.stat().st_size > 50_000_000
    assert resolve_model(None) == path
    assert resolve_model("default") == path
    assert resolve_model("smollm2-135m") == path


def test_a_gguf_path_works(tmp_path):
    f = tmp_path / "m.gguf"
    f.write_bytes(b"GGUF")
    assert resolve_model(str(f)) == f.resolve()


def test_unknown_name_lists_available():
    with pytest.raises(ModelNotFoundError) as info:
        resolve_model("gpt-4")
    assert "'gpt-4' is not known" in str(info.value)
    assert "default" in str(info.value) and "smollm2-135m" in str(info.value)


def test_missing_path_is_clear(tmp_path):
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        resolve_model(str(tmp_path / "nope.gguf"))


def test_alias_tables(tmp_path, monkeypatch):
    f = tmp_path / "big.gguf"
    f.write_bytes(b"GGUF")
    monkeypatch.setenv("HPC_CHAT_HOME", str(tmp_path))
    (tmp_path / "models.yaml").write_text(f"big: {f}\n")
    assert resolve_model("big") == f.resolve()
    assert resolve_model("site-one", {"site-one": str(f)}) == f.resolve()
    assert "big" in available_models()


def test_bad_alias_table(tmp_path, monkeypatch):
    monkeypatch.setenv("HPC_CHAT_HOME", str(tmp_path))
    (tmp_path / "models.yaml").write_text("- not a mapping\n")
    with pytest.raises(ModelNotFoundError, match="models.yaml"):
        resolve_model("anything")
