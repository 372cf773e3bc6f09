"""``hpc-chat serve``: an OpenAI-compatible HTTP API in front of the workflow's workers."""
