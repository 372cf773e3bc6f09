"""The driver: the process on a login node (or in a driver job) that runs a chat or a batch.

:mod:`.workflow` (``ParslChatWorkflow``: routing, the response cache, history, statistics),
:mod:`.workflow_config` (its YAML file), :mod:`.startup` (following workers from submission to
connection), :mod:`.executors` (where the tasks run), :mod:`.token_hub` (streamed text coming
back from the workers), :mod:`.history`, :mod:`.stats`, and :mod:`.site_check`
(``hpc-chat sites test``).
"""
