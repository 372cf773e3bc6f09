"""The original design's Parsl apps, bound to Parsl's global kernel (``parsl.load``).

hpc_chat itself does not use the global kernel: its executors bind
:func:`hpc_chat.worker.tasks.chat_task` to a kernel each of them owns.
"""

from parsl import python_app

from hpc_chat.agents.aggregate import aggregate_responses
from hpc_chat.worker.chat import process_chat_message
from hpc_chat.worker.tasks import chat_batch_task, chat_task  # noqa: F401


@python_app
def parsl_chat_app(agent_config, message, context):
    """Parsl app wrapper for chat message processing."""
    return process_chat_message(agent_config, message, context)


@python_app
def parsl_aggregate_app(responses):
    """Parsl app for aggregating multiple agent responses."""
    return aggregate_responses(responses)
