"""Re-export: Parsl configs are built from site profiles by :mod:`hpc_chat.sites.build`."""

from hpc_chat.sites.build import get_hpc_config, get_local_config  # noqa: F401
