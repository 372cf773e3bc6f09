"""Scheduler commands that fail, hang or print nonsense (mocked at Parsl's command seam)."""

from __future__ import annotations

import json
import subprocess
import time

import pytest
from parsl.jobs.states import JobState
from parsl.providers.errors import SubmitException

from hpc_chat.sites.build import build_provider
from hpc_chat.sites.registry import load_profile

SEAM = "parsl.providers.cluster_provider.execute_wait"


class Scheduler:
    """Scripted answers for sbatch/squeue/qsub/qstat; records every command."""

    def __init__(self, answers):
        self.answers = answers  # command word -> list of answers (the last one repeats)
        self.calls = []

    def __call__(self, cmd, timeout=None):
        self.calls.append(cmd)
        word = cmd.split()[0]
        queue = self.answers.get(word, [(0, "", "")])
        answer = queue.pop(0) if len(queue) > 1 else queue[0]
        if isinstance(answer, BaseException):
            raise answer
        return answer

    def count(self, word):
        return sum(1 for c in self.calls if c.split()[0] == word)


def slurm(mocker, tmp_path, **answers):
    answers.setdefault("sacct", [(1, "", "Slurm accounting storage is disabled")])
    answers.setdefault("sbatch", [(0, "Submitted batch job 42", "")])
    sched = Scheduler(answers)
    mocker.patch(SEAM, side_effect=sched)
    provider = build_provider(load_profile("local-slurm"))
    provider.script_dir = str(tmp_path)
    provider.recheck_delay_s = 0.01
    return provider, sched


def state(provider, job="42"):
    return provider.status([job])[0].state


def test_a_hanging_squeue_keeps_the_job_running_and_does_not_raise(mocker, tmp_path):
    hang = subprocess.TimeoutExpired("squeue", 10)
    provider, sched = slurm(mocker, tmp_path, squeue=[(0, "42 R", ""), hang])
    assert provider.submit("true", 1) == "42"
    assert state(provider) == JobState.RUNNING
    started = time.monotonic()
    assert state(provider) == JobState.RUNNING  # the hang changed nothing
    assert time.monotonic() - started < 5


def test_a_hanging_sbatch_is_a_clear_submit_error(mocker, tmp_path):
    provider, _ = slurm(mocker, tmp_path, sbatch=[subprocess.TimeoutExpired("sbatch", 10)])
    with pytest.raises(SubmitException, match="'sbatch' did not answer within 10 s"):
        provider.submit("true", 1)


def test_a_failing_sbatch_keeps_the_schedulers_message(mocker, tmp_path):
    provider, _ = slurm(mocker, tmp_path, sbatch=[
        (1, "", "sbatch: error: Batch job submission failed: Invalid account")])
    with pytest.raises(SubmitException, match="Invalid account"):
        provider.submit("true", 1)


@pytest.mark.parametrize("garbage", ["Segmentation fault\n", "42\n", "99 R\n", "42 WEIRD\n",
                                     "<html>proxy error</html>\n"])
def test_nonsense_from_squeue_keeps_the_last_known_state(mocker, tmp_path, garbage):
    provider, _ = slurm(mocker, tmp_path, squeue=[(0, "42 R", ""), (0, garbage, "")])
    provider.submit("true", 1)
    assert state(provider) == JobState.RUNNING
    assert state(provider) == JobState.RUNNING


def test_one_empty_answer_does_not_end_the_job(mocker, tmp_path):
    """The hiccup that would otherwise make Parsl submit a spurious replacement block."""
    provider, sched = slurm(mocker, tmp_path, squeue=[(0, "42 R", ""), (0, "", ""),
                                                      (0, "42 R", "")])
    provider.submit("true", 1)
    assert state(provider) == JobState.RUNNING
    assert state(provider) == JobState.RUNNING  # empty, then listed again on the re-check
    assert sched.count("squeue") == 3


def test_a_job_missing_twice_is_finished(mocker, tmp_path):
    provider, _ = slurm(mocker, tmp_path, squeue=[(0, "42 R", ""), (0, "", "")])
    provider.submit("true", 1)
    assert state(provider) == JobState.RUNNING
    assert state(provider) == JobState.COMPLETED


def test_pbs_qstat_nonsense_and_missing_jobs(mocker, tmp_path):
    running = json.dumps({"Jobs": {"7.server": {"job_state": "R"}}})
    empty = json.dumps({"Jobs": {}})
    sched = Scheduler({"qsub": [(0, "7.server", "")],
                       "qstat": [(0, running, ""), (0, "qstat: cannot connect", ""),
                                 (0, empty, ""), (0, running, ""), (0, empty, "")]})
    mocker.patch(SEAM, side_effect=sched)
    provider = build_provider(load_profile("generic-pbspro").model_copy(update={
        "provider": load_profile("generic-pbspro").provider.model_copy(
            update={"account": "a", "queue": "q"})}))
    provider.script_dir = str(tmp_path)
    provider.recheck_delay_s = 0.01
    assert provider.submit("true", 1) == "7.server"
    assert provider.status(["7.server"])[0].state == JobState.RUNNING
    assert provider.status(["7.server"])[0].state == JobState.RUNNING  # nonsense refused
    assert provider.status(["7.server"])[0].state == JobState.RUNNING  # empty, re-check lists it
    assert provider.status(["7.server"])[0].state == JobState.COMPLETED  # empty twice
