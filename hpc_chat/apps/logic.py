"""Re-export: the worker-side chat logic lives in :mod:`hpc_chat.worker.chat`."""

from hpc_chat.agents.aggregate import aggregate_responses  # noqa: F401
from hpc_chat.worker.chat import process_chat_batch, process_chat_message  # noqa: F401
