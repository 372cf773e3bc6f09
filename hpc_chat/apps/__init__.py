"""The original design's ``apps`` import paths, kept working as thin re-exports (see
:mod:`hpc_chat.core`): worker code lives in :mod:`hpc_chat.worker`, Parsl configs are built by
:mod:`hpc_chat.sites.build`."""
