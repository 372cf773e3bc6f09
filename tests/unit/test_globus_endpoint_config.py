"""Generated endpoint configs, checked by globus-compute-endpoint's own loader (real Parsl
objects are built: a missing network interface fails, as it would on the endpoint)."""

from __future__ import annotations

import parsl.launchers
import parsl.providers
import pytest
from click import ClickException
from globus_compute_endpoint.endpoint.config.utils import load_config_yaml

from hpc_chat.globus.endpoint_config import dump, endpoint_config, write_endpoint_files
from hpc_chat.sites.registry import load_profile, shipped_dir

SHIPPED = sorted(p.stem for p in shipped_dir().glob("*.yaml"))


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_profile_makes_a_valid_endpoint_config(name, tmp_path):
    profile = load_profile(name)
    config_path, readme = write_endpoint_files(profile, tmp_path)
    config = load_config_yaml(config_path.read_text())
    engine = config.engine
    try:
        assert type(engine).__name__ == "GlobusComputeEngine"
        htex = engine.executor
        assert isinstance(htex.provider, getattr(parsl.providers, profile.provider.type))
        assert isinstance(htex.provider.launcher,
                          getattr(parsl.launchers, profile.provider.launcher.type))
        if profile.provider.worker_init.strip():
            assert profile.provider.worker_init.strip() in htex.provider.worker_init
        if profile.executor.max_workers_per_node:
            assert htex.max_workers_per_node == profile.executor.max_workers_per_node
        assert "globus-compute-endpoint start" in readme.read_text()
    finally:
        engine.shutdown()


def test_interface_addresses_are_resolved_by_the_loader(tmp_path):
    profile = load_profile("local")
    good = profile.model_copy(update={"executor": profile.executor.model_copy(
        update={"address": None, "interface": "lo"})})
    config = load_config_yaml(dump(endpoint_config(good)))
    try:
        assert config.engine.executor.address == "127.0.0.1"
    finally:
        config.engine.shutdown()
    bad = profile.model_copy(update={"executor": profile.executor.model_copy(
        update={"address": None, "interface": "nosuchif0"})})
    with pytest.raises(ClickException):
        load_config_yaml(dump(endpoint_config(bad)))
