"""Re-export: logging lives in :mod:`hpc_chat.logs`."""

from hpc_chat.logs import set_debug_mode  # noqa: F401
