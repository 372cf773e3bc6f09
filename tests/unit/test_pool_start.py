"""The launch line that loads the node engines while a worker pool starts: what it runs, what it
leaves alone, and the process it starts (the whole path runs in
tests/integration/test_node_engine.py)."""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

from hpc_chat.protocol.context import SiteModel
from hpc_chat.protocol.engine import MAX_POOL_MODELS, AgentModel, PoolStart
from hpc_chat.sites.build import POOL_START, build_config, start_engines_with_pool
from hpc_chat.sites.registry import load_profile
from hpc_chat.worker import pool_start

POOL_START_BIN = str(Path(sys.executable).parent / POOL_START)  # the console script
HOSTILE = "x'; touch /tmp/pwned #{block_id}$(id)"

PARSL_KEYS = dict(debug="", max_workers_per_node="", addresses="127.0.0.1", prefetch_capacity=0,
                  cores_per_worker=1, mem_per_worker=None, poll_period=10, worker_port=1,
                  cert_dir="c", logdir="l", logconf="lc", heartbeat_period=2,
                  heartbeat_threshold=10, address_probe_timeout_string="", drain_period=None,
                  cpu_affinity="none", enable_mpi_mode="", mpi_launcher="mpiexec",
                  accelerators="", nodes_per_block=1)


def _plan() -> PoolStart:
    return PoolStart(model=SiteModel(aliases={"m": HOSTILE}, override=HOSTILE),
                     agents=[AgentModel(model=HOSTILE, n_ctx=512)])


def test_the_launch_line_starts_the_engines_then_becomes_the_pool_with_the_plan_intact():
    config = build_config(load_profile("local"))
    assert start_engines_with_pool(config, _plan())
    template = config.executors[0].launch_cmd
    # Parsl formats the line twice: once with its settings, once per block with its id
    line = template.format(**PARSL_KEYS).format(block_id=7)
    words = shlex.split(line)
    assert words[0] == POOL_START and PoolStart.from_arg(words[1]) == _plan()  # every byte
    assert words[2:9] == ["--logdir=l", "</dev/null", ">/dev/null", "2>&1", "&", "exec",
                          "process_worker_pool.py"]
    assert "--block_id=7" in line and "$" not in line and "touch" not in line
    assert not start_engines_with_pool(config, _plan())  # never wrapped twice


def test_pools_with_their_own_gpus_or_launch_line_or_no_preload_are_left_alone():
    config = build_config(load_profile("local"))
    executor = config.executors[0]
    before = executor.launch_cmd
    for model in (SiteModel(preload=False), SiteModel(engine="worker")):
        assert not start_engines_with_pool(config, PoolStart(model=model, agents=[AgentModel()]))
    assert not start_engines_with_pool(config, PoolStart(model=SiteModel(), agents=[]))
    executor.available_accelerators = ["0", "1"]
    assert not start_engines_with_pool(config, _plan()) and executor.launch_cmd == before
    executor.available_accelerators = []
    executor.launch_cmd = "my_pool.sh {block_id}"
    assert not start_engines_with_pool(config, _plan())
    assert executor.launch_cmd == "my_pool.sh {block_id}"


def test_a_plan_that_is_not_one_is_one_line_and_exit_2():
    run = subprocess.run([POOL_START_BIN, "not base64!"], capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 2 and run.stdout == ""
    assert len(run.stderr.strip().splitlines()) == 1
    assert "not a pool start plan" in run.stderr and "Traceback" not in run.stderr


def test_distinct_specs_once_each_in_the_agents_order_and_an_unknown_model_alone_left_out():
    plan = PoolStart(model=SiteModel(), agents=[
        AgentModel(model="echo?tokens=2"), AgentModel(model="echo?tokens=2", n_ctx=2048),
        AgentModel(model="no-such-model"),
        AgentModel(model="echo?tokens=3"), AgentModel(model="echo?tokens=2", n_ctx=512)])
    specs = pool_start.specs(plan)
    assert [(s.path, s.n_ctx) for s in specs] == [("echo?tokens=2", 2048),
                                                  ("echo?tokens=3", 2048),
                                                  ("echo?tokens=2", 512)]


def test_the_plan_names_each_local_agent_setting_once_and_no_remote_one():
    from hpc_chat.driver.executors.factory import pool_start_plan
    from hpc_chat.driver.workflow_config import load_workflow

    loaded = load_workflow(None)  # the packaged workflow: three agents on the site's model
    plan = pool_start_plan(loaded, SiteModel(override="echo"))
    assert plan.agents == [AgentModel()] and plan.model.override == "echo"
    names = [agent.name for agent in loaded.agents]
    assert pool_start_plan(loaded, SiteModel(), remote=names).agents == []
    many = SimpleNamespace(agents=[SimpleNamespace(name=f"a{i}", config=SimpleNamespace(
        model="default", n_ctx=128 + i, n_threads=None, n_gpu_layers=None))
        for i in range(90)])  # 90 distinct settings: the first 64 load ahead
    assert len(pool_start_plan(many, SiteModel()).agents) == MAX_POOL_MODELS
