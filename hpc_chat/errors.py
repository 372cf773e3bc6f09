"""One exception hierarchy for everything a user can cause or fix.

The CLI turns any :class:`HpcChatError` into a short message and exit code 2 (configuration or
usage) without a traceback; anything else is a bug and keeps its traceback.
"""


class HpcChatError(Exception):
    """Base class: the message is written for the user and says what to do."""


class ConfigError(HpcChatError):
    """A YAML file (agent, workflow, data unit) is missing, unreadable or invalid."""


class ProfileError(ConfigError):
    """A site profile is missing or invalid."""


class ModelNotFoundError(ConfigError):
    """An agent or site names a model that cannot be found."""


class PromptTooLongError(HpcChatError):
    """The prompt plus ``max_tokens`` does not fit the model's context window.

    Retrying cannot help, so the retry handler gives up on it at once.
    """


class FormatError(HpcChatError, ValueError):
    """A ``response_format`` or ``grammar`` that cannot be enforced (refused before anything
    is decoded); ``param`` names the request key at fault."""

    def __init__(self, message: str, *, param: str = "response_format"):
        super().__init__(message)
        self.param = param


class GenerationError(HpcChatError):
    """llama.cpp failed while generating (not a user mistake; may succeed on retry)."""


class TaskTimeout(HpcChatError):
    """A task ran past its time limit (``performance.timeout_seconds``): retryable, since a
    stalled worker answers on its next try (:mod:`hpc_chat.worker.time_limit`)."""


class InputError(HpcChatError):
    """Batch input or an output path cannot be used."""


class HistoryError(HpcChatError):
    """The conversation history database cannot be opened or written."""


class ExecutorError(HpcChatError):
    """The Parsl (or other) executor could not start or lost its workers."""


class SubmitError(HpcChatError):
    """A scheduler command (sbatch, qsub, ...) failed; keeps its output for the user."""

    def __init__(self, message: str, *, command: str = "", retcode: int | None = None,
                 stdout: str = "", stderr: str = ""):
        parts = [message]
        if command:
            parts.append(f"command: {command}")
        if retcode is not None:
            parts.append(f"exit code: {retcode}")
        if stdout.strip():
            parts.append(f"stdout:\n{stdout.strip()}")
        if stderr.strip():
            parts.append(f"stderr:\n{stderr.strip()}")
        super().__init__("\n".join(parts))
        self.command, self.retcode, self.stdout, self.stderr = command, retcode, stdout, stderr
