"""Attacks by another user of a shared node, made as a real second Unix user (``useradd``;
the test machine is root) against the commands of this one: a planted home, a symlinked lock
or output in a shared directory, the engine's socket directory taken first. Each attack fails:
the victim's command refuses with one clear message, or completes, and nothing the attacker
pointed at is touched."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

pytestmark = [pytest.mark.skipif(os.getuid() != 0 or not shutil.which("useradd"),
                                 reason="needs root to make a second user (as in CI)")]

ATTACKER = "hcattacker"
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
SHIPPED = Path(__file__).resolve().parents[2] / "site_configs"


@pytest.fixture(scope="module")
def attacker() -> str:
    if subprocess.run(["id", ATTACKER], capture_output=True).returncode != 0:
        subprocess.run(["useradd", "--no-create-home", "--shell", "/bin/sh", ATTACKER],
                       check=True, capture_output=True)
    return ATTACKER


@pytest.fixture
def shared():
    """A directory every user can write, with /tmp's sticky bit (a project's scratch)."""
    path = Path(tempfile.mkdtemp(prefix="hc", dir="/tmp"))  # short: sockets go there
    path.chmod(0o1777)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def as_user(user: str, *argv: str) -> None:
    subprocess.run(["runuser", "-u", user, "--", *argv], check=True, capture_output=True,
                   timeout=60)


def hpc_chat(*args: str, home: Path, env: dict | None = None, cwd: Path | None = None,
             timeout: float = 300) -> subprocess.CompletedProcess:
    full = {**os.environ, "HPC_CHAT_HOME": str(home), **(env or {})}
    return subprocess.run([sys.executable, "-m", "hpc_chat", *args], env=full, cwd=cwd,
                          capture_output=True, text=True, timeout=timeout)


def test_a_home_planted_by_another_user_is_refused_and_its_profile_never_runs(
        attacker, shared, tmp_path):
    """The attacker makes the victim's HPC_CHAT_HOME first, open to all, with a local site
    profile whose worker_init writes a file: the victim's command refuses the home, naming
    its owner, and the profile never runs."""
    home = shared / "home"
    proof = shared / "proof"
    profile = (SHIPPED / "local.yaml").read_text().replace(
        "  launcher: {type: SingleNodeLauncher}",
        f"  launcher: {{type: SingleNodeLauncher}}\n  worker_init: \"id > {proof}\"")
    planted = shared / "local.yaml"
    planted.write_text(profile)
    planted.chmod(0o644)
    as_user(attacker, "mkdir", "-m", "0777", str(home))
    as_user(attacker, "mkdir", "-m", "0777", str(home / "sites"))
    as_user(attacker, "cp", str(planted), str(home / "sites" / "local.yaml"))
    ran = hpc_chat("ask", "--model", "echo", "hello", home=home, cwd=tmp_path, timeout=120)
    assert ran.returncode == 2, ran.stdout + ran.stderr
    assert f"{home} (HPC_CHAT_HOME) belongs to {attacker}" in ran.stderr
    assert "Traceback" not in ran.stderr
    assert not proof.exists()


def test_a_lock_or_output_symlinked_by_another_user_is_never_written_through(
        attacker, shared, tmp_path):
    """In a shared output directory the attacker links OUT.lock, then OUT, to a file of the
    victim: the batch refuses each with one message, and the file is untouched."""
    precious = tmp_path / "precious.txt"
    precious.write_text("precious\n")
    prompts = tmp_path / "p.txt"
    prompts.write_text("one\ntwo\n")
    out = shared / "out.jsonl"
    config = ["--config", str(FIXTURES / "workflows" / "local-echo.yml"), "--model", "echo"]
    as_user(attacker, "ln", "-s", str(precious), str(shared / "out.jsonl.lock"))
    ran = hpc_chat("batch", str(prompts), "-o", str(out), *config, home=tmp_path / "home")
    assert ran.returncode == 2, ran.stderr
    assert "out.jsonl.lock: cannot create the output's lock file: it is a symbolic link" \
        in ran.stderr and "Traceback" not in ran.stderr
    as_user(attacker, "rm", str(shared / "out.jsonl.lock"))
    new = tmp_path / "made-through-a-link"
    for target, extra in ((new, []), (precious, ["--resume"])):
        as_user(attacker, "ln", "-sfn", str(target), str(out))
        ran = hpc_chat("batch", str(prompts), "-o", str(out), *config, *extra,
                       home=tmp_path / "home")
        assert ran.returncode == 2, ran.stderr
        assert f"is a symbolic link made by {attacker}, not by you" in ran.stderr
    assert precious.read_text() == "precious\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["home", "p.txt", "precious.txt"]
    as_user(attacker, "rm", str(out))
    ran = hpc_chat("batch", str(prompts), "-o", str(out), *config, home=tmp_path / "home")
    assert ran.returncode == 0, ran.stderr
    assert oct(out.stat().st_mode & 0o777) == "0o600"  # prompts inside: only the victim's
    assert [json.loads(x)["ok"] for x in out.read_text().splitlines()] == [True, True]


@pytest.mark.parsl
def test_an_engine_socket_directory_taken_first_does_not_stop_the_run(attacker, shared,
                                                                       tmp_path):
    """The attacker creates the victim's $TMPDIR/hpc_chat-UID (open to all) before the victim
    runs: the victim's workers meet at a private directory of the victim's own instead, the
    answer comes, and nothing of the victim's lands in the attacker's directory."""
    taken = shared / f"hpc_chat-{os.getuid()}"
    as_user(attacker, "mkdir", "-m", "0777", str(taken))
    ran = hpc_chat("ask", "--config", str(FIXTURES / "workflows" / "fast.yml"), "--model",
                   "echo", "-q", "answered anyway", home=tmp_path / "home",
                   env={"TMPDIR": str(shared)})
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.strip() == "answered anyway"
    assert list(taken.iterdir()) == []
    own = [p for p in shared.glob(f"hpc_chat-{os.getuid()}-*") if p.stat().st_uid == os.getuid()]
    assert len(own) == 1 and oct(own[0].stat().st_mode & 0o777) == "0o700"
