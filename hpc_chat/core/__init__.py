"""Core building blocks: agent configs, the executor, data units, logging and statistics."""
