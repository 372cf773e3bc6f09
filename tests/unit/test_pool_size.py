"""How many workers a run of known messages starts: the most answers they make at once, never
more than the site allows (hpc_chat.driver.pool_size)."""

from __future__ import annotations

import json

from hpc_chat.batch.input import read_batch
from hpc_chat.batch.run import workers_to_use
from hpc_chat.driver.embeddings import SLICE
from hpc_chat.driver.pool_size import MOST_COUNTED, answers_at_once, workers_to_start
from hpc_chat.driver.workflow import ParslChatWorkflow
from hpc_chat.sites.build import build_config
from hpc_chat.sites.registry import load_profile


def test_make_demos_prompts_need_five_workers_of_eight(repo_root):
    """The demo's four prompts are routed to five answers (two for the brainstorm), so its
    pool starts five workers, not the eight the local site allows on two cores."""
    workflow = ParslChatWorkflow()  # the packaged workflow, checked, nothing started
    items = read_batch(repo_root / "examples" / "demo-prompts.jsonl")
    counts = [answers_at_once(workflow.check(), item.prompt, None) for item in items]
    assert counts == [1, 1, 1, 2]
    assert workers_to_use(workflow, list(items)) == 5
    assert workers_to_use(workflow, list(items), ["creative_agent", "balanced_agent"]) == 8


def test_named_agents_collaboration_agents_and_embedding_slices(tmp_path):
    """A line's own model is one answer, 'auto' is routed; a collaboration's listed agents
    count when they are more than the router's choice; an embeddings line needs a task for
    each slice of its inputs; an agent the driver calls itself needs no worker."""
    workflow = ParslChatWorkflow()
    loaded = workflow.check()
    lines = [
        {"custom_id": "a", "method": "POST", "url": "/v1/chat/completions",
         "body": {"model": "creative_agent", "messages": [{"role": "user", "content": "Hi"}]}},
        {"custom_id": "b", "method": "POST", "url": "/v1/chat/completions",
         "body": {"model": "auto", "messages": [{"role": "user", "content": "Hi"}]}},
        {"custom_id": "c", "method": "POST", "url": "/v1/embeddings",
         "body": {"model": "balanced_agent", "input": ["x"] * (2 * SLICE + 1)}},
    ]
    path = tmp_path / "in.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    items = list(read_batch(path))
    assert not [item.problem for item in items if item.problem]
    assert workers_to_use(workflow, items) == 1 + 1 + 3
    assert answers_at_once(loaded, "Hi", None) == 1
    loaded.settings.collaboration.agents = ["creative_agent", "analytical_agent",
                                            "balanced_agent"]
    assert answers_at_once(loaded, "Hi", None) == 3
    assert workers_to_use(workflow, items) == 1 + 3 + 3
    assert answers_at_once(loaded, "Hi", ["creative_agent"]) == 1
    assert answers_at_once(loaded, "Hi", None, remote={"creative_agent"}) == 2
    assert answers_at_once(loaded, "Hi", ["creative_agent"], remote={"creative_agent"}) == 0
    assert workers_to_start([0, 0]) == 1


def test_counting_stops_and_never_says_zero():
    def counts():  # a corpus far longer than what is counted: reading past the limit fails
        for _ in range(MOST_COUNTED // 3 + 1):
            yield 3
        raise AssertionError("counted past MOST_COUNTED")
    assert workers_to_start([]) == 1
    assert workers_to_start(counts()) == MOST_COUNTED


def test_the_count_caps_the_sites_workers_and_never_raises_them():
    profile = load_profile("local")  # no max_workers_per_node: the workflow's max_workers
    workers = lambda config: config.executors[0].max_workers_per_node  # noqa: E731
    assert workers(build_config(profile, max_workers=8)) == 8
    assert workers(build_config(profile, max_workers=8, most_workers=5)) == 5
    assert workers(build_config(profile, max_workers=8, most_workers=64)) == 8
    fixed = profile.model_copy(update={"executor": profile.executor.model_copy(
        update={"max_workers_per_node": 4})})
    assert workers(build_config(fixed, max_workers=8, most_workers=64)) == 4
    assert workers(build_config(fixed, most_workers=2)) == 2
