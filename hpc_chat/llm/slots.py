"""How many sequences a batched engine decodes at once: as many as still pay for themselves.

The site's ``model.engine_slots`` is the most an engine may run: its context holds that many
KV streams. Whether the last of them earns its place depends on the machine and the answers:
with llama.cpp's own batched generation, one 2-core machine of this kind gains from 253 to 273
tokens/s going from 8 to 16 sequences, another stays flat after 8, and a GPU keeps gaining
past 32. A sequence that adds no throughput only makes every running answer wait longer for
its next token. So each engine measures, as it runs, what a generation step costs at each
batch size, and takes new requests only while its batch is below a *cap*:

- The cap starts at ``min(engine_slots, START)``.
- When the batch is full at the cap, requests still wait for a slot, and the cap is below
  ``engine_slots``, the cap doubles (at most to ``engine_slots``) on trial.
- Once ``SAMPLES`` full steps have been measured at both sizes, the larger one is kept if it
  gives at least ``GAIN`` times the tokens per second of the smaller (a full step of ``b``
  sequences makes ``b`` tokens), and may then be doubled again the same way. Otherwise the
  cap goes back and stays there for the engine's life.

``GAIN`` is 1: a larger batch is kept unless it decodes fewer tokens per second. Its memory is
already taken (the context holds ``engine_slots`` streams), and a batch only grows while
requests wait, when throughput is what counts; and its gain end to end is larger than its gain
per step. Measured here (Intel Xeon, 2 cores, the real workload's 64 prompts on the engine
alone): a full step of 16 made 4-15% more tokens/s than one of 8, and the whole batch finished
8% sooner (161-166 against 149-153 tokens/s), since its longest answers start sooner and the
tail in which a few of them decode alone is shorter. Steps are timed as they come: the larger
size is measured later, mostly with longer caches, which makes it look a little slower.

Only steps that carry generated tokens alone are measured (a prompt in the step would make it
cost more for a reason that is not its size), each timed to its end on the device
(``llama_synchronize``: a GPU's ``llama_decode`` returns before the work is done). The cap
changes answers only where batching already may: which sequences share a step changes no
sequence's numbers, except that a sequence past 256 cells decoded beside others takes another
flash-attention path than alone, so a near-tie there may flip (docs/performance.md). The
verdict is one comparison, kept for the engine's life: on a machine where the two sizes are
about equal it may go either way, and either way costs little. Its one cost is the trial
itself: ``SAMPLES`` steps at a size that may not pay.
"""

from __future__ import annotations

START = 8  # llama.cpp's batched generation gains up to here on every machine measured
GAIN = 1.0  # what a doubling must add to tokens/s to be kept
SAMPLES = 32  # full steps measured at a size before it is judged


class SlotCap:
    """The number of sequences an engine of ``most`` slots admits now (:attr:`cap`)."""

    def __init__(self, most: int, start: int = START):
        self.most = most
        self.cap = min(most, start)
        self.base: int | None = None  # while a larger cap is on trial: the size it must beat
        self.settled = False  # a larger cap did not pay: no more trials
        self.steps: dict[int, list] = {}  # batch size -> [full steps, seconds]

    def observe(self, generating: int, seconds: float, waiting: int) -> None:
        """A step that generated one token for each of ``generating`` sequences (and carried
        no prompt) took ``seconds``; ``waiting`` requests had no slot."""
        if generating != self.cap and generating != self.base:
            return  # not a full step at a size being compared
        count = self.steps.setdefault(generating, [0, 0.0])
        count[0] += 1
        count[1] += seconds
        if self.base is not None:
            if self._measured(self.cap) and self._measured(self.base):
                if self._rate(self.cap) < GAIN * self._rate(self.base):
                    self.cap, self.settled = self.base, True
                self.base = None
        elif waiting and not self.settled and self.cap < self.most and \
                self._measured(self.cap):
            self.base, self.cap = self.cap, min(self.most, 2 * self.cap)

    def _measured(self, size: int) -> bool:
        return self.steps.get(size, (0,))[0] >= SAMPLES

    def _rate(self, size: int) -> float:
        steps, seconds = self.steps[size]
        return size * steps / seconds if seconds > 0 else float("inf")

    def as_dict(self) -> dict:
        """The cap, and tokens/s at each size measured (the bench's engine profile keeps it)."""
        return {"cap": self.cap, "most": self.most,
                "tokens_per_s_by_batch": {str(b): self._rate(b) for b in sorted(self.steps)
                                          if self.steps[b][1] > 0}}
