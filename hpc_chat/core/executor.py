"""Re-export: executors live in :mod:`hpc_chat.executors`."""

from hpc_chat.executors.base import ChatExecutor, ExecutorConfig  # noqa: F401
from hpc_chat.executors.local import LocalExecutor  # noqa: F401
from hpc_chat.executors.parsl import ParslExecutor  # noqa: F401
