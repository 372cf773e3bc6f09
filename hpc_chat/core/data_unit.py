"""Re-export: conversation history lives in :mod:`hpc_chat.driver.history` (``DataUnit*`` were the
original design's names for it)."""

from hpc_chat.driver.history import HistoryConfig as DataUnitConfig  # noqa: F401
from hpc_chat.driver.history import MemoryHistory as DataUnitMemory  # noqa: F401
from hpc_chat.driver.history import SQLiteHistory as DataUnitSQLite  # noqa: F401
from hpc_chat.driver.history import bound_turns  # noqa: F401
from hpc_chat.driver.history import create_history as create_data_unit  # noqa: F401
