"""The rule that sizes a batched engine's batch at run time (:mod:`hpc_chat.llm.slots`), fed
step costs of known shape: no verdict here depends on this machine's speed."""

from __future__ import annotations

from hpc_chat.llm.slots import GAIN, SAMPLES, START, SlotCap


def _run(cap: SlotCap, step_s, steps: int, waiting: int = 5) -> list[int]:
    """``steps`` full steps at whatever the cap allows, each costing ``step_s(size)``;
    the caps seen."""
    seen = []
    for _ in range(steps):
        size = cap.cap
        cap.observe(size, step_s(size), waiting)
        seen.append(cap.cap)
    return seen


def test_a_machine_slower_past_8_tries_16_once_and_goes_back_for_good():
    cap = SlotCap(32)
    assert cap.cap == START == 8
    seen = _run(cap, lambda b: 0.004 * b / 8 * (1.02 if b > 8 else 1), 10 * SAMPLES)  # -2%
    assert 16 in seen and seen[-1] == 8 and cap.settled
    assert max(seen) == 16  # never tried 32 after 16 did not pay


def test_a_machine_that_keeps_gaining_grows_to_the_sites_most():
    cap = SlotCap(32)
    seen = _run(cap, lambda b: 0.004 * (1 + b / 64), 10 * SAMPLES)  # more tokens/s per doubling
    assert seen[-1] == 32 and not cap.settled
    assert sorted(set(seen)) == [8, 16, 32]
    rates = cap.as_dict()["tokens_per_s_by_batch"]
    assert rates["16"] >= GAIN * rates["8"] and rates["32"] >= GAIN * rates["16"]


def test_no_trial_without_requests_waiting_or_room():
    cap = SlotCap(32)
    assert set(_run(cap, lambda b: 0.001, 4 * SAMPLES, waiting=0)) == {8}
    small = SlotCap(4)
    assert small.cap == 4 and set(_run(small, lambda b: 0.001 / b, 4 * SAMPLES)) == {4}


def test_steps_below_the_cap_are_not_its_measure():
    """A half-full step costs less than a full one; counting it would flatter the cap."""
    cap = SlotCap(16)
    for _ in range(10 * SAMPLES):
        cap.observe(5, 0.001, waiting=0)
    assert cap.steps == {} and cap.cap == 8
