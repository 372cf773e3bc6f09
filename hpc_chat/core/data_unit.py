"""Re-export: conversation history lives in :mod:`hpc_chat.history` (``DataUnit*`` were the
original design's names for it)."""

from hpc_chat.history import HistoryConfig as DataUnitConfig  # noqa: F401
from hpc_chat.history import MemoryHistory as DataUnitMemory  # noqa: F401
from hpc_chat.history import SQLiteHistory as DataUnitSQLite  # noqa: F401
from hpc_chat.history import bound_turns  # noqa: F401
from hpc_chat.history import create_history as create_data_unit  # noqa: F401
