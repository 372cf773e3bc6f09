"""How each scheduler's answer becomes the state hpc_chat shows (status, /v1/status)."""

from __future__ import annotations

import json

import pytest

from hpc_chat.sites.schedulers import SCHEDULERS, JobState


@pytest.mark.parametrize("squeue, shown", [
    ("PENDING 2026-12-01T04:00:00 Priority", "PENDING (Priority, expected start "
                                             "2026-12-01T04:00:00)"),
    ("PENDING N/A JobHeldUser", "PENDING (JobHeldUser)"),
    ("PENDING N/A ReqNodeNotAvail, UnavailableNodes:vm-node2",
     "PENDING (ReqNodeNotAvail, UnavailableNodes:vm-node2)"),
    ("RUNNING 2026-12-01T03:00:00 None", "RUNNING"),
])
def test_slurm_pending_says_why_and_when(squeue, shown):
    assert SCHEDULERS["slurm"].parse_state(squeue + "\n", "") == shown


def test_slurm_falls_back_to_scontrol_for_a_finished_job():
    assert SCHEDULERS["slurm"].parse_state("", "JobId=7 JobState=COMPLETED Reason=None") == \
        "COMPLETED"


@pytest.mark.parametrize("job, shown", [
    ({"job_state": "Q", "estimated": {"start_time": "Tue Dec  1 04:00:00 2026"}},
     "QUEUED (expected start Tue Dec  1 04:00:00 2026)"),
    ({"job_state": "Q"}, "QUEUED"),
    ({"job_state": "R", "estimated": {"start_time": "x"}}, "RUNNING"),
])
def test_pbs_queued_says_when_pbs_expects_it_to_start(job, shown):
    answer = json.dumps({"Jobs": {"12.pbs": job}})
    assert SCHEDULERS["pbspro"].parse_state(answer, "") == shown
    assert SCHEDULERS["pbspro"].parse_state("not json", "") is None


@pytest.mark.parametrize("scheduler, words, state, ended", [
    ("slurm", "PENDING (Priority, expected start 2026-12-01T04:00:00)", "PENDING", False),
    ("slurm", "COMPLETING", "RUNNING", False),
    ("slurm", "NODE_FAIL", "FAILED", True),
    ("slurm", "PREEMPTED", "TIMEOUT", True),
    ("slurm", "CANCELLED", "CANCELLED", True),
    ("slurm", "SOMETHING_NEW", "UNKNOWN", False),  # may still run: never taken as ended
    ("pbspro", "QUEUED (expected start Tue Dec  1 04:00:00 2026)", "PENDING", False),
    ("pbspro", "EXITING", "RUNNING", False),
    ("pbspro", "FINISHED", "COMPLETED", True),
    ("local", "FINISHED", "COMPLETED", True),
])
def test_each_schedulers_words_translate_to_one_state_and_keep_the_words(scheduler, words,
                                                                        state, ended):
    status = SCHEDULERS[scheduler].status(words)
    assert status.state is JobState(state) and status.ended is ended
    assert str(status) == words  # what the user sees is the scheduler's own words
