"""The original design's ``hpc_chat.workflow`` import path, kept working as a re-export.

The workflow lives in :mod:`hpc_chat.driver.workflow` (the driver's package: workflow, token
hub, executors, start-up); nothing in hpc_chat imports this module.
"""

from hpc_chat.driver.workflow import (  # noqa: F401
    ParslChatWorkflow,
    create_parsl_chat_workflow,
)
