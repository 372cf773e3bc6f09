"""The Globus Compute path. The cloud service is unreachable here, so: the function and its
arguments go through the SDK's real serializer into a fresh interpreter with the real model;
login and network errors come from the real SDK; and the submission path runs the workflow with
only the SDK's ``Executor`` replaced (by one that runs tasks locally, for real)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import subprocess
import sys
import uuid

import pytest
from click.testing import CliRunner

from hpc_chat.agents.config import AgentConfig
from hpc_chat.cli import cli
from hpc_chat.driver.executors.globus import GlobusComputeExecutor
from hpc_chat.errors import InputError
from hpc_chat.globus.client import GlobusAuthError, make_client
from hpc_chat.worker.remote import remote_chat

pytestmark = pytest.mark.model

ENDPOINT = str(uuid.UUID(int=42))
AGENT = AgentConfig.from_yaml("config/EnhancedCollaborativeAgent_3.yml").to_dict()


def test_function_and_arguments_round_trip_and_run_in_a_fresh_interpreter(tmp_path):
    from globus_compute_sdk.serialize import ComputeSerializer, JSONData

    ser = ComputeSerializer(strategy_data=JSONData())
    context = {"history": [], "options": {"seed": 3, "max_tokens": 8}, "model": {}}
    payload = {"fn": ser.serialize(remote_chat),
               "args": ser.serialize([AGENT, "Say hello.", context])}
    (tmp_path / "payload.json").write_text(json.dumps(payload))
    script = """
import json, sys
from globus_compute_sdk.serialize import ComputeSerializer, JSONData
ser = ComputeSerializer(strategy_data=JSONData())
payload = json.load(open(sys.argv[1]))
fn, args = ser.deserialize(payload["fn"]), ser.deserialize(payload["args"])
results = [fn(*args) for _ in range(2)]
print(ser.serialize(results))
"""
    out = subprocess.run([sys.executable, "-c", script, str(tmp_path / "payload.json")],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    first, second = ser.deserialize(out.stdout.strip())
    assert first["content"] and first["agent"] == "balanced_agent"
    assert first["timings"]["model_loaded_now"] and not second["timings"]["model_loaded_now"]
    assert second["content"] == first["content"]  # same seed, same answer


def test_not_logged_in_is_a_clear_error_without_a_prompt(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))  # an empty token store
    monkeypatch.delenv("GLOBUS_COMPUTE_CLIENT_ID", raising=False)
    monkeypatch.delenv("GLOBUS_COMPUTE_CLIENT_SECRET", raising=False)
    with pytest.raises(GlobusAuthError, match="hpc-chat endpoint login.*GLOBUS_COMPUTE_CLIENT"):
        make_client(interactive=False)
    monkeypatch.setenv("GLOBUS_COMPUTE_CLIENT_SECRET", "s3cret-value")
    with pytest.raises(GlobusAuthError, match="credentials are incomplete") as info:
        make_client(interactive=False)
    assert "s3cret-value" not in str(info.value)


def test_cli_reports_auth_problems_with_exit_2(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("GLOBUS_COMPUTE_CLIENT_ID", raising=False)
    monkeypatch.delenv("GLOBUS_COMPUTE_CLIENT_SECRET", raising=False)
    result = CliRunner().invoke(cli, ["ask", "hi", "--endpoint", ENDPOINT])
    assert result.exit_code == 2
    assert "not logged in to Globus Compute" in result.output and "Traceback" not in result.output
    bad = CliRunner().invoke(cli, ["ask", "hi", "--endpoint", "not-a-uuid"])
    assert bad.exit_code == 2 and "is not an endpoint id" in bad.output


def test_unreachable_service_is_a_clear_error(tmp_path, monkeypatch):
    """With a client identity set, the SDK really tries the (unreachable) service."""
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("GLOBUS_COMPUTE_CLIENT_ID", str(uuid.UUID(int=7)))
    monkeypatch.setenv("GLOBUS_COMPUTE_CLIENT_SECRET", "s3cret-value")
    from hpc_chat.errors import HpcChatError

    with pytest.raises(HpcChatError) as info:
        make_client(interactive=False)
    assert "cannot reach the Globus Compute service (GlobusConnectionError)" in str(info.value)
    assert "s3cret-value" not in str(info.value)


class FakeSDKExecutor:
    """Stands in for globus_compute_sdk.Executor: the service hop is replaced, the task runs
    here for real. Records what was submitted; knows the tasks of its task group."""

    instances: list[FakeSDKExecutor] = []
    service: dict[str, dict] = {}  # task_id -> {"result" | "error"} as the service would hold
    fail_on = "FAIL"

    def __init__(self, endpoint_id, client, task_group_id, batch_size, serializer,
                 result_serializers):
        self.endpoint_id, self.task_group_id, self.batch_size = endpoint_id, task_group_id, \
            batch_size
        self.serializer = serializer
        self.submitted = []
        self.pool = concurrent.futures.ThreadPoolExecutor(1)
        FakeSDKExecutor.instances.append(self)

    def submit(self, fn, *args, **kwargs):
        json.dumps([args, kwargs])  # JSON data only, as the JSONData strategy demands
        self.submitted.append((fn, args, kwargs))
        task_id = str(uuid.uuid4())

        def run():
            if self.fail_on in args[1]:
                FakeSDKExecutor.service[task_id] = {"group": self.task_group_id,
                                                    "error": "boom"}
                raise RuntimeError("TaskExecutionFailed: remote traceback: boom")
            result = fn(*args, **kwargs)
            FakeSDKExecutor.service[task_id] = {"group": self.task_group_id, "result": result}
            return result

        fut = self.pool.submit(run)
        fut.task_id = task_id
        return fut

    def reload_tasks(self):
        futures = []
        for task_id, rec in FakeSDKExecutor.service.items():
            if rec["group"] != self.task_group_id:
                continue
            fut = concurrent.futures.Future()
            fut.task_id = task_id
            if "result" in rec:
                fut.set_result(rec["result"])
            else:
                fut.set_exception(RuntimeError(rec["error"]))
            futures.append(fut)
        return futures

    def shutdown(self, wait=True, cancel_futures=False):
        self.pool.shutdown(wait=wait, cancel_futures=cancel_futures)


@pytest.fixture
def fake_sdk(mocker):
    FakeSDKExecutor.instances.clear()
    FakeSDKExecutor.service.clear()
    mocker.patch("globus_compute_sdk.Executor", FakeSDKExecutor)
    mocker.patch("hpc_chat.globus.client.make_client", return_value=object())
    return FakeSDKExecutor


@pytest.fixture(scope="module")
def fast(fixtures) -> str:
    return str(fixtures / "workflows" / "fast.yml")


def test_batch_through_an_endpoint_results_failures_and_stats(fake_sdk, fast, tmp_path):
    prompts = tmp_path / "in.jsonl"
    prompts.write_text("".join(json.dumps({"id": i, "prompt": p}) + "\n" for i, p in
                               enumerate(["Say hi.", "Please FAIL now.", "Explain rain."])))
    out = tmp_path / "out.jsonl"
    result = CliRunner().invoke(cli, ["batch", str(prompts), "-o", str(out), "--config", fast,
                                      "--endpoint", ENDPOINT], catch_exceptions=False)
    assert result.exit_code == 1  # one request failed
    lines = {x["id"]: x for x in map(json.loads, out.read_text().splitlines())}
    assert lines[0]["ok"] and lines[2]["ok"] and lines[2]["agents"] == ["analytical_agent"]
    assert not lines[1]["ok"] and "boom" in lines[1]["error"]
    (sdk,) = fake_sdk.instances
    assert sdk.endpoint_id == ENDPOINT and sdk.batch_size == 128
    assert type(sdk.serializer.data_serializer).__name__ == "JSONData"
    assert {fn.__name__ for fn, _, _ in sdk.submitted} == {"remote_chat"}
    state = json.loads((tmp_path / "out.jsonl.globus.json").read_text())
    assert state == {"endpoint_id": ENDPOINT, "task_group_id": sdk.task_group_id}
    assert "requests (ok / failed)" in result.output and "2 / 1" in result.output


def test_resume_fetches_finished_results_instead_of_recomputing(fake_sdk, fast, tmp_path):
    from hpc_chat.batch.input import read_batch
    from hpc_chat.batch.output import OutputWriter
    from hpc_chat.batch.run import answer_with_workflow
    from hpc_chat.driver.workflow import ParslChatWorkflow

    prompts = tmp_path / "in.jsonl"
    prompts.write_text("".join(json.dumps({"id": i, "prompt": f"Name a color, {i}."}) + "\n"
                               for i in range(4)))
    out = tmp_path / "out.jsonl"
    state = f"{out}.globus.json"

    async def first_run_crashes_after_two_answers():
        wf = ParslChatWorkflow(endpoint=ENDPOINT, globus_state=state)
        await wf.initialize(fast)
        writer = OutputWriter(out, resume=False)
        original = writer.write

        def write(item, result, *, finished_at):
            if writer.written == 2:
                raise KeyboardInterrupt  # the driver dies before writing the rest
            return original(item, result, finished_at=finished_at)

        writer.write = write
        try:
            await answer_with_workflow(wf, read_batch(prompts), writer, agents=None, options={})
        except KeyboardInterrupt:
            pass
        finally:
            writer.close()
            wf.executor.record_task_ids()
            await asyncio.to_thread(fake_sdk.instances[0].pool.shutdown, True)  # tasks finish
            await wf.shutdown()

    asyncio.run(first_run_crashes_after_two_answers())
    assert len(out.read_text().splitlines()) == 2
    assert len(fake_sdk.service) == 4  # all four tasks ran on the "endpoint"
    tasks_log = (tmp_path / "out.jsonl.globus.tasks").read_text().splitlines()
    assert len(tasks_log) == 4

    result = CliRunner().invoke(cli, ["batch", str(prompts), "-o", str(out), "--config", fast,
                                      "--endpoint", ENDPOINT, "--resume"],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    second = fake_sdk.instances[-1]
    assert second.task_group_id == fake_sdk.instances[0].task_group_id
    assert second.submitted == []  # nothing recomputed: the two missing answers were fetched
    answered = [json.loads(x)["id"] for x in out.read_text().splitlines()]
    assert sorted(answered) == [0, 1, 2, 3]


def test_payloads_over_10_mb_are_refused_before_sending():
    from globus_compute_sdk.serialize import ComputeSerializer, JSONData

    ex = GlobusComputeExecutor(ENDPOINT)
    ex._serializer = ComputeSerializer(strategy_data=JSONData())
    ex.check_payload((AGENT, "short", {}), {})
    with pytest.raises(InputError, match="at most 10 MB per task"):
        ex.check_payload((AGENT, "x" * (11 * 1024 * 1024), {}), {})


def _a_function():
    return 1


def test_results_are_deserialized_from_json_only():
    """A result in dill's format (or any code format) would run code when loaded: refused."""
    from globus_compute_sdk.errors import DeserializationError
    from globus_compute_sdk.serialize import ComputeSerializer, DillCodeSource, DillDataBase64

    from hpc_chat.driver.executors.globus import json_results_serializer

    ours = json_results_serializer()
    assert ours.deserialize(ours.serialize({"content": "hi"})) == {"content": "hi"}
    dill_data = ComputeSerializer(strategy_data=DillDataBase64()).serialize({"content": "hi"})
    with pytest.raises(DeserializationError, match="DillDataBase64 was refused"):
        ours.deserialize(dill_data)
    code = ComputeSerializer(strategy_code=DillCodeSource()).serialize(_a_function)
    with pytest.raises(DeserializationError, match="DillCodeSource was refused"):
        ours.deserialize(code)
