"""The bad-input corpus: each case is a clear error naming the file and key, exit code 2, and
no traceback. (Agent files: test_agent_config.py; profiles: test_sites.py; batch lines:
test_batch_io.py; history databases: test_data_unit.py.)"""

from __future__ import annotations

import subprocess
import sys

import pytest
from click.testing import CliRunner

from hpc_chat.cli import cli

CASES = [
    ("missing_agent_file.yml", "missing_agent_file.yml: config.agents.0.config_file: "
                               "agents/ghost.yml: config file not found"),
    ("unknown_key.yml", "unknown_key.yml: config.performance.timeout_secs: unknown key"),
    ("bad_agent.yml", "bad_temperature.yml: config.temperature: Input should be less than or "
                      "equal to 2"),
    ("unknown_model.yml", "gpt4.yml: config.model: model 'gpt-4' is not known: use one of "
                          "default, echo, smollm2-135m"),
    ("empty_prompt.yml", "empty_prompt.yml: config.system_prompt: Value error, the system "
                         "prompt is empty"),
    ("name_mismatch.yml", "name_mismatch.yml: config.agents.0.name: 'someone_else' does not "
                          "match the name 'balanced_agent'"),
    ("hpc_without_site.yml", "hpc_without_site.yml: config.parsl: Value error, environment "
                             "'hpc' needs 'site: NAME'"),
    ("no_agents.yml", "no_agents.yml: config.agents: List should have at least 1 item"),
    ("bad_aggregator.yml", "bad_aggregator.yml: config.collaboration.aggregator: "
                           "'chief_agent' is not one of the workflow's agents (balanced_agent)"),
    ("bad_template.yml", "bad_template.yml: config.collaboration.review_prompt: Value error, "
                         "does not render: TemplateSyntaxError: unexpected '}'"),
]


@pytest.mark.parametrize("filename, expected", CASES)
def test_bad_workflow_configs_exit_2_with_file_and_key(fixtures, filename, expected):
    path = fixtures / "workflows" / "bad" / filename
    result = CliRunner().invoke(cli, ["ask", "hello", "--config", str(path)])
    assert result.exit_code == 2, result.output
    assert expected in " ".join(result.output.split()), result.output
    assert "Traceback" not in result.output


def test_missing_workflow_file(tmp_path):
    result = CliRunner().invoke(cli, ["ask", "hi", "--config", str(tmp_path / "nope.yml")])
    assert result.exit_code == 2 and "nope.yml: config file not found" in result.output


def test_bad_site_profile_on_the_command_line(fixtures):
    result = CliRunner().invoke(cli, ["ask", "hi", "--site",
                                      str(fixtures / "sites" / "hostile-account.yaml")])
    assert result.exit_code == 2
    assert "provider.account: Value error" in result.output


def test_sites_validate_lists_every_invalid_profile(fixtures):
    bad = [str(fixtures / "sites" / n) for n in ("bad-values.yaml", "unknown-provider.yaml")]
    result = CliRunner().invoke(cli, ["sites", "validate", "local", *bad])
    assert result.exit_code == 2
    assert "ok local" in result.output
    assert result.output.count("invalid") >= 2 and "2 of 3 profiles are invalid" in result.output


def test_batch_input_errors_exit_2(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    result = CliRunner().invoke(cli, ["batch", str(empty), "-o", str(tmp_path / "o.jsonl")])
    assert result.exit_code == 2 and "the input file is empty" in result.output


def test_yaml_load_is_banned_by_the_linter(tmp_path, repo_root):
    bad = tmp_path / "bad.py"
    bad.write_text("import yaml\n\n\ndef read(text):\n    return yaml.load(text)\n")
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "--config",
                             str(repo_root / "pyproject.toml"), str(bad)],
                            capture_output=True, text=True)
    assert result.returncode == 1
    assert "use yaml.safe_load" in result.stdout
    clean = subprocess.run([sys.executable, "-m", "ruff", "check", "--config",
                            str(repo_root / "pyproject.toml"), str(repo_root / "hpc_chat")],
                           capture_output=True, text=True)
    assert clean.returncode == 0, clean.stdout
