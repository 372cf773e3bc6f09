"""Re-export: executors live in :mod:`hpc_chat.driver.executors`."""

from hpc_chat.driver.executors.base import ChatExecutor, ExecutorConfig  # noqa: F401
from hpc_chat.driver.executors.local import LocalExecutor  # noqa: F401
from hpc_chat.driver.executors.parsl import ParslExecutor  # noqa: F401
