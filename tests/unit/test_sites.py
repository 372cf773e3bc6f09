"""Site profiles: validation, hostile values, lookup order, rendering (golden files)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from hpc_chat.errors import ProfileError, SubmitError
from hpc_chat.sites.build import build_config
from hpc_chat.sites.registry import all_profiles, find_profile, load_profile, shipped_dir
from hpc_chat.sites.render import render_pilot_script
from hpc_chat.sites.submit import render_driver_script, submit_driver

SHIPPED = sorted(p.stem for p in shipped_dir().glob("*.yaml"))
GOLDEN = Path(__file__).resolve().parents[1] / "golden"


def test_the_expected_sites_are_shipped():
    assert {"local", "local-slurm", "generic-slurm", "generic-pbspro", "polaris", "aurora",
            "perlmutter-gpu", "perlmutter-cpu", "frontier", "delta"} <= set(SHIPPED)


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_profile_validates_and_builds_parsl_objects(name):
    profile = load_profile(name)
    config = build_config(profile)
    executor = config.executors[0]
    import parsl.providers
    assert isinstance(executor.provider, getattr(parsl.providers, profile.provider.type))
    assert type(executor.provider.launcher).__name__ == profile.provider.launcher.type
    if profile.provider.worker_init.strip():  # the admin's worker_init is kept, after ours
        assert executor.provider.worker_init.rstrip("\n").endswith(
            profile.provider.worker_init.strip())


@pytest.mark.parametrize("filename, expected", [
    ("hostile-account.yaml", "provider.account: Value error, 'x\\n#SBATCH --uid=0' is not "
                             "allowed in a job script"),
    ("hostile-quote.yaml", "provider.partition: Value error, \"a'; rm -rf ~\" is not allowed"),
    ("hostile-overrides.yaml", "provider.launcher.overrides: Value error, '1;' is not allowed"),
    ("hostile-directive.yaml", "provider.scheduler_options: Value error, each line must be a "
                               "'#SBATCH ...' directive, got 'rm -rf ~'"),
    ("unknown-provider.yaml", "provider: Input tag 'SlurmProviderr' found using 'type' does not "
                              "match any of the expected tags: 'SlurmProvider', "
                              "'PBSProProvider', 'LocalProvider'"),
    ("unknown-launcher.yaml", "provider.launcher: Input tag 'MpirunLauncher' found using "
                              "'type' does not match any of the expected tags: 'SrunLauncher', "
                              "'MpiExecLauncher', 'AprunLauncher'"),
    ("worker-init-list.yaml", "provider.worker_init: Input should be a valid string"),
    ("invalid-yaml.yaml", "invalid YAML: line 4, column 13"),
])
def test_bad_profiles_name_file_and_key(fixtures, filename, expected):
    with pytest.raises(ProfileError) as info:
        load_profile(fixtures / "sites" / filename)
    message = str(info.value)
    assert message.startswith(str(fixtures / "sites" / filename))
    assert expected in message


def test_every_problem_is_listed(fixtures):
    with pytest.raises(ProfileError) as info:
        load_profile(fixtures / "sites" / "bad-values.yaml")
    message = str(info.value)
    for expected in ("provider.walltime: Value error, '1:00' is not a walltime",
                     "provider.nodes_per_block: Input should be greater than or equal to 1",
                     "provider.launcher.overides: unknown key",
                     "executor.max_workers_per_node: Input should be greater than or equal",
                     "executor.cpu_affinity: Value error, use none, block"):
        assert expected in message


def test_placeholders_are_reported_and_block_submission(fixtures, tmp_path):
    profile = load_profile(fixtures / "sites" / "placeholder.yaml")
    assert profile.placeholders() == ["provider.account: 'YOUR_ACCOUNT'",
                                      "driver.account: 'YOUR_ACCOUNT'"]
    job = render_driver_script(profile, tmp_path / "in.jsonl", tmp_path / "out.jsonl")
    with pytest.raises(ProfileError, match="edit these placeholder values before submitting"):
        submit_driver(profile, job)


def test_lookup_order(tmp_path, monkeypatch, hpc_home):
    site_dir, user_dir = tmp_path / "site", hpc_home / "sites"
    site_dir.mkdir()
    user_dir.mkdir(exist_ok=True)
    text = "name: {}\nprovider: {{type: LocalProvider}}\ndescription: {}\n"
    (user_dir / "polaris.yaml").write_text(text.format("polaris", "user copy"))
    assert load_profile("polaris").description == "user copy"
    (site_dir / "polaris.yml").write_text(text.format("polaris", "site copy"))
    monkeypatch.setenv("HPC_CHAT_SITE_PATH", str(site_dir))
    assert load_profile("polaris").description == "site copy"
    assert all_profiles()["polaris"] == site_dir / "polaris.yml"
    assert find_profile(str(site_dir / "polaris.yml")) == site_dir / "polaris.yml"
    (user_dir / "polaris.yaml").unlink()
    monkeypatch.delenv("HPC_CHAT_SITE_PATH")
    assert load_profile("polaris").source.endswith("site_configs/polaris.yaml")
    with pytest.raises(ProfileError, match="known sites: .*local-slurm"):
        load_profile("nowhere")


def normalize(text: str, tmp_path: Path) -> str:
    """Replace what depends on this machine or this run, so golden files are stable."""
    text = text.replace(str(Path(sys.executable).parent), "<venv>/bin")
    text = text.replace(sys.executable, "<venv>/bin/python")
    text = text.replace(os.environ["HPC_CHAT_HOME"], "<hpc_chat_home>")
    text = text.replace(str(tmp_path), "<work>")
    text = text.replace(str(shipped_dir()), "<site_configs>")
    text = re.sub(r"parsl\.htex\.block-0\.\d+(\.\d+)?", "parsl.htex.block-0.<time>", text)
    return re.sub(r"-\d{8}-\d{6}\.log", "-<time>.log", text)


def check_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if not path.exists():
        path.write_text(text)
        pytest.fail(f"golden file {path} was missing and has been written; check it, commit it "
                    f"and run again")
    if path.read_text() != text:
        pytest.fail(f"{name} differs from the golden file. If the change is intended: "
                    f"rm {path} && make test (it is rewritten), then review the diff")


@pytest.mark.parametrize("name", SHIPPED)
def test_rendered_pilot_script_matches_golden(name, tmp_path):
    command, script = render_pilot_script(load_profile(name))
    text = normalize(f"# {command}\n{script}", tmp_path)
    check_golden(f"{name}.pilot.sh", text)
    assert subprocess.run(["bash", "-n"], input=script, text=True).returncode == 0


@pytest.mark.parametrize("name", [n for n in SHIPPED if n != "local"])
def test_rendered_driver_script_matches_golden(name, tmp_path):
    job = render_driver_script(load_profile(name), tmp_path / "prompts.jsonl",
                               tmp_path / "answers.jsonl")
    check_golden(f"{name}.driver.sh", normalize(job.script, tmp_path))
    assert subprocess.run(["bash", "-n"], input=job.script, text=True).returncode == 0


def test_hostile_paths_are_quoted_inert(tmp_path):
    """A file name with quotes and shell syntax reaches the script only as one quoted word."""
    evil = tmp_path / "it's $(touch pwned); rm -rf ~.jsonl"
    job = render_driver_script(load_profile("local-slurm"), evil, tmp_path / "out.jsonl")
    line = job.script.strip().splitlines()[-1]
    assert "'\"'\"'" in line  # the single quote was escaped by shlex.quote
    out = subprocess.run(["bash", "-c", "set -- " + line.split(" batch ", 1)[1]
                          + '; printf "%s\\n" "$1"'], capture_output=True, text=True,
                         cwd=tmp_path)
    assert out.stdout.strip() == str(evil)
    assert not (tmp_path / "pwned").exists()


def test_log_paths_that_cannot_be_directives_are_refused(tmp_path, monkeypatch):
    home = tmp_path / "my home"
    monkeypatch.setenv("HPC_CHAT_HOME", str(home))
    with pytest.raises(SubmitError, match="cannot go on a job script directive line"):
        render_driver_script(load_profile("local-slurm"), tmp_path / "in.jsonl",
                             tmp_path / "out.jsonl")


def test_missing_interface_is_a_clear_error(tmp_path):
    from hpc_chat.driver.workflow import build_parsl_config
    from hpc_chat.driver.workflow_config import load_workflow

    path = tmp_path / "iface.yaml"
    path.write_text("name: iface\nprovider: {type: LocalProvider}\n"
                    "executor: {interface: nosuchif0}\n")
    settings = load_workflow().settings
    from hpc_chat.errors import ConfigError
    with pytest.raises(ConfigError, match="iface.yaml: cannot build the Parsl configuration"):
        build_parsl_config(load_profile(path), settings)


LINE_BREAKS = ["\n", "\r", "\u2028", "\u0085", "\r\n"]


@pytest.mark.parametrize("brk", LINE_BREAKS)
@pytest.mark.parametrize("where", ["provider", "driver"])
def test_a_line_break_inside_a_directive_list_item_is_rejected(tmp_path, brk, where):
    """An item may not smuggle a second line (a shell command) into the job script."""
    item = f"#SBATCH --mem=1G{brk}touch /tmp/owned"
    text = ("name: x\nprovider:\n  type: SlurmProvider\n  partition: debug\n"
            "  launcher: {type: SrunLauncher}\n")
    import yaml
    data = yaml.safe_load(text)
    data.setdefault(where, {})["scheduler_options"] = [item]
    path = tmp_path / "x.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ProfileError) as info:
        load_profile(path)
    assert "scheduler_options" in str(info.value)


@pytest.mark.parametrize("field", ["account", "partition", "qos", "constraint"])
@pytest.mark.parametrize("payload", ["acct\n", "acct\r", "a\u2028b", "$(id)", "a`id`",
                                     "a;id", "a'b", 'a"b', "a b", "x" * 5000 + "\n"])
def test_hostile_directive_values_are_rejected_field_by_field(tmp_path, field, payload):
    import yaml
    data = {"name": "x", "provider": {"type": "SlurmProvider", field: payload,
                                      "launcher": {"type": "SrunLauncher"}}}
    path = tmp_path / "x.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ProfileError, match=f"provider.{field}"):
        load_profile(path)
