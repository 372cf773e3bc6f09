"""Agent YAML loading: the seed's format, and errors that name the file and the key."""

import pytest

from hpc_chat.agents.config import AgentConfig
from hpc_chat.errors import ConfigError


def test_good_agent_loads_with_every_section(fixtures):
    agent = AgentConfig.from_yaml(fixtures / "agents" / "good.yml")
    assert agent.name == "tester"
    assert agent.config.temperature == 0.0
    assert agent.config.max_tokens == 24
    assert agent.config.collaboration.specialization_keywords == ["test", "check this"]
    assert agent.config.performance.enable_caching is False
    assert agent.source.endswith("good.yml")
    assert agent.to_dict()["config"]["seed"] == 7


@pytest.mark.parametrize("name", ["EnhancedCollaborativeAgent_1.yml",
                                  "EnhancedCollaborativeAgent_2.yml",
                                  "EnhancedCollaborativeAgent_3.yml"])
def test_packaged_agents_load_by_relative_path(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # found in the package, not the current directory
    agent = AgentConfig.from_yaml(f"config/{name}")
    assert agent.config.model == "default"
    assert agent.config.collaboration.specialization_keywords


def test_packaged_personas_differ_in_temperature():
    temps = {AgentConfig.from_yaml(f"config/EnhancedCollaborativeAgent_{i}.yml").name:
             AgentConfig.from_yaml(f"config/EnhancedCollaborativeAgent_{i}.yml").config.temperature
             for i in (1, 2, 3)}
    assert temps == {"creative_agent": 0.9, "analytical_agent": 0.3, "balanced_agent": 0.7}


@pytest.mark.parametrize("filename, expected", [
    ("unknown_key.yml", "unknown_key.yml: config.temprature: unknown key"),
    ("bad_temperature.yml", "bad_temperature.yml: config.temperature: Input should be less "
                            "than or equal to 2"),
    ("wrong_type.yml", "wrong_type.yml: config.collaboration.specialization_keywords: "
                       "Input should be a valid list"),
    ("empty_prompt.yml", "empty_prompt.yml: config.system_prompt: Value error, the system "
                         "prompt is empty"),
    ("invalid_yaml.yml", "invalid_yaml.yml: invalid YAML: line 5, column 1: found unexpected "
                         "end of stream (while scanning a quoted scalar that starts at line 3)"),
    ("not_a_mapping.yml", "not_a_mapping.yml: expected a mapping of keys at the top level"),
    ("empty.yml", "empty.yml: the file is empty"),
    ("missing.yml", "missing.yml: config file not found"),
])
def test_bad_agent_files_name_file_and_key(fixtures, filename, expected):
    with pytest.raises(ConfigError) as info:
        AgentConfig.from_yaml(fixtures / "agents" / filename)
    assert expected in str(info.value)
