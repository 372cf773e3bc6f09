"""A failure's HTTP status and OpenAI code come from its code, chosen where it failed, never
from the text of its error (which may quote a prompt)."""

from hpc_chat.batch.output import unknown_model
from hpc_chat.errors import ConfigError, PromptTooLongError
from hpc_chat.protocol.failure import FailureCode, code_of, combined, failure_code
from hpc_chat.protocol.failure import status_of as failure_status


class Wrapped(Exception):  # as Parsl wraps a worker's exception
    def __init__(self, inner):
        super().__init__(str(inner))
        self.e_value = inner


def test_the_code_comes_from_the_exception_type_wrapped_or_not():
    assert failure_code(PromptTooLongError("x")) is FailureCode.CONTEXT_LENGTH_EXCEEDED
    assert failure_code(Wrapped(PromptTooLongError("x"))) is FailureCode.CONTEXT_LENGTH_EXCEEDED
    assert failure_code(ValueError("the message is empty")) is FailureCode.INVALID_REQUEST
    assert failure_code(ConfigError("bad agent file")) is FailureCode.GENERATION_FAILED
    assert failure_code(RuntimeError("the node engine ended")) is FailureCode.GENERATION_FAILED


def test_an_error_that_quotes_words_of_a_prompt_keeps_its_own_status():
    quoting = {"ok": False, "error": "worker lost while answering 'unknown model in the "
                                     "context window?'", "error_kind": "runtime",
               "error_code": "generation_failed"}
    assert failure_status(quoting) == (500, "generation_failed", None)


def test_each_code_has_its_status_parameter_and_kind():
    assert failure_status(unknown_model("gpt-9", ["auto"])) == (404, "model_not_found",
                                                                "body.model")
    too_long = {"error_code": "context_length_exceeded", "error_kind": "input"}
    assert failure_status(too_long) == (400, "context_length_exceeded", "body.messages")
    assert FailureCode.HISTORY_UNAVAILABLE.status == 500
    assert {c.kind for c in FailureCode if c.status < 500} == {"input"}
    assert {c.kind for c in FailureCode if c.status >= 500} == {"runtime"}


def test_a_line_written_before_codes_is_read_by_its_kind():
    assert code_of({"error_kind": "input"}) is FailureCode.INVALID_REQUEST
    assert code_of({"error_kind": "runtime"}) is FailureCode.GENERATION_FAILED
    assert code_of({"error_code": "no such code"}) is FailureCode.GENERATION_FAILED


def test_several_agents_failing_give_one_code():
    c = FailureCode
    assert combined([c.INVALID_REQUEST, c.INVALID_REQUEST]) is c.INVALID_REQUEST
    assert combined([c.INVALID_REQUEST, c.GENERATION_FAILED]) is c.GENERATION_FAILED
    assert combined([c.GENERATION_FAILED, c.CONTEXT_LENGTH_EXCEEDED]) is \
        c.CONTEXT_LENGTH_EXCEEDED
    assert combined([c.HISTORY_UNAVAILABLE, c.GENERATION_FAILED]) is c.HISTORY_UNAVAILABLE
    assert combined([]) is c.GENERATION_FAILED
