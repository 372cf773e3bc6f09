"""How agents work together on one message: the collaboration modes, their settings and the
exact prompts of their later rounds (docs/agents.md).

* ``route``: the routed agents answer in parallel; their answers are joined
  (:mod:`hpc_chat.agents.aggregate`). One round.
* ``synthesize`` (Mixture-of-Agents): the routed (or listed) agents answer in parallel, then
  the ``aggregator`` agent writes one reply from their answers. Two rounds.
* ``review`` (multi-agent debate): after the first answers, ``rounds`` review rounds in which
  each agent sees the others' previous answers and revises its own; then a synthesis (as
  above) or a ``vote``. With ``stop_when_unchanged`` the rounds end early once no agent's
  answer changed.

Later rounds' prompts are jinja2 templates, rendered in jinja2's sandbox (a workflow file is
shared; a template must not reach Python, nor change what it is given). A template's variables
are listed with its default.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any, Literal

from jinja2 import StrictUndefined
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError
from pydantic import Field, ValidationInfo, field_validator

from hpc_chat.errors import HpcChatError
from hpc_chat.protocol.request import Mode
from hpc_chat.util.configfile import StrictModel


def parse_mode(value: Any) -> Mode:
    """A request's mode (``--mode``, ``hpc_chat_mode``), or one clear error."""
    try:
        return Mode(value)
    except ValueError:
        raise HpcChatError(f"mode {value!r} is not one of "
                           f"{', '.join(m.value for m in Mode)}") from None


def collaborating(settings: CollaborationSettings, asked: Any) -> bool:
    """Whether a request's agents work together: the mode it asks for (``options["mode"]``),
    else the workflow's ``collaboration.mode``, is not ``route``. (Its value is checked where
    the request is answered: :func:`parse_mode`.)"""
    return (asked or settings.mode) != Mode.ROUTE


# question: the user's message; answers: [{agent, content}] of the last round, in the order
# the agents were chosen (best-matching first).
SYNTHESIZE_PROMPT = """\
You have been given answers from several assistants to the question below. Write one reply \
to the question: keep what is correct and useful in them, drop what is wrong, and do not \
mention the assistants.

Question: {{ question }}
{% for a in answers %}
Answer {{ loop.index }}:
{{ a.content }}
{% endfor %}"""

# question; own: this agent's previous answer; others: [{agent, content}] the other agents'
# previous answers; round: the review round (1 for the first).
REVIEW_PROMPT = """\
Question: {{ question }}

Your previous answer:
{{ own }}
{% for a in others %}
Another assistant's answer:
{{ a.content }}
{% endfor %}
Using the other answers as extra advice, check your answer and give an updated answer to \
the question. Reply with the answer only."""

MAX_TEMPLATE = 20_000  # characters of a prompt template
MAX_MADE = 1_000_000  # characters (or items) a template's `*` may make, and `**`'s exponent


class _Bounded(ImmutableSandboxedEnvironment):
    """jinja2's sandbox with its arithmetic bounded: ``{{ 'x' * 10**12 }}`` in a shared
    workflow file would otherwise take the driver's memory when the workflow loads."""

    intercepted_binops = frozenset({"*", "**"})

    def call_binop(self, context, operator, left, right):
        if operator == "**" and isinstance(right, (int, float)) and abs(right) > 64:
            raise SecurityError(f"an exponent of {right} is more than a prompt needs")
        if operator == "*":
            sized = [x for x in (left, right) if isinstance(x, (str, list, tuple))]
            count = right if sized and sized[0] is left else left
            if sized and isinstance(count, int) and count * len(sized[0]) > MAX_MADE:
                raise SecurityError(f"a repetition of {count} is more than a prompt needs")
        return super().call_binop(context, operator, left, right)


# Immutable: no changing what it is given. StrictUndefined: a misspelt variable is an error
# at load (the trial render below), not a silently empty prompt.
_env = _Bounded(autoescape=False, undefined=StrictUndefined)

# What each template is trial-rendered with when the workflow loads, so that a template that
# cannot render fails there, naming its key, rather than on the first request.
_SAMPLE_ANSWERS = [{"agent": "a", "content": "one"}, {"agent": "b", "content": "two"}]
_SAMPLES = {
    "synthesize_prompt": {"question": "q", "answers": _SAMPLE_ANSWERS},
    "review_prompt": {"question": "q", "own": "one", "others": _SAMPLE_ANSWERS[1:],
                      "round": 1},
}


class CollaborationSettings(StrictModel):
    """The workflow YAML's ``config.collaboration`` section."""

    mode: Mode = Mode.ROUTE
    # who answers the first round: these agents instead of the router's choice
    agents: list[str] | None = Field(None, min_length=1)
    # who writes the reply in synthesize (and review with finish: synthesize); default: the
    # workflow's default agent
    aggregator: str | None = None
    rounds: int = Field(2, ge=1, le=10)  # review rounds after the first answers
    stop_when_unchanged: bool = True
    finish: Literal["synthesize", "vote"] = "synthesize"
    synthesize_prompt: str = Field(SYNTHESIZE_PROMPT, max_length=MAX_TEMPLATE)
    review_prompt: str = Field(REVIEW_PROMPT, max_length=MAX_TEMPLATE)

    @field_validator("synthesize_prompt", "review_prompt")
    @classmethod
    def _template_renders(cls, value: str, info: ValidationInfo) -> str:
        try:
            _rendered(value, _SAMPLES[info.field_name])
        except Exception as exc:  # noqa: BLE001 - whatever the template did
            raise ValueError(f"does not render: {_why(exc)}") from None
        return value


def _rendered(template: str, variables: dict[str, Any]) -> str:
    return _env.from_string(template).render(**variables).strip()


def _why(exc: Exception) -> str:
    # TemplateSyntaxError, SecurityError, UndefinedError, or Python's own (1/0, ...)
    return f"{type(exc).__name__}: {exc}"


def render(key: str, template: str, **variables: Any) -> str:
    """A later round's prompt from the template at ``config.collaboration.<key>``
    (sandboxed: a template reaches only the variables given; one that tries more, or fails in
    any way, is one error naming the key and what it did)."""
    try:
        return _rendered(template, variables)
    except Exception as exc:  # noqa: BLE001
        raise HpcChatError(f"config.collaboration.{key} does not render: {_why(exc)}") from None


def synthesis_prompt(settings: CollaborationSettings, question: str,
                     answers: list[dict[str, Any]]) -> str:
    return render("synthesize_prompt", settings.synthesize_prompt, question=question,
                  answers=[{"agent": a["agent"], "content": a["content"]} for a in answers])


def review_prompt(settings: CollaborationSettings, question: str, agent: str,
                  answers: list[dict[str, Any]], round_no: int) -> str:
    own = next((a["content"] for a in answers if a["agent"] == agent), "")
    others = [{"agent": a["agent"], "content": a["content"]} for a in answers
              if a["agent"] != agent]
    return render("review_prompt", settings.review_prompt, question=question, own=own,
                  others=others, round=round_no)


def normalized(text: str) -> str:
    """What two answers are compared by (a vote, "unchanged"): case and spacing ignored."""
    return re.sub(r"\s+", " ", text).strip().lower()


def unchanged(before: list[dict[str, Any]], after: list[dict[str, Any]]) -> bool:
    """No agent's answer changed between two rounds."""
    old = {a["agent"]: normalized(a["content"]) for a in before}
    return all(old.get(a["agent"]) == normalized(a["content"]) for a in after)


def vote(answers: list[dict[str, Any]]) -> dict[str, Any]:
    """The answer most agents gave (compared :func:`normalized`); a tie goes to the agent
    chosen first."""
    counts = Counter(normalized(a["content"]) for a in answers)
    best = max(counts.values())
    return next(a for a in answers if counts[normalized(a["content"])] == best)
