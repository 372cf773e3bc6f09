"""Re-export: logging lives in :mod:`hpc_chat.util.logs`."""

from hpc_chat.util.logs import set_debug_mode  # noqa: F401
