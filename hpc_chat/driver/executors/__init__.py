"""Where chat tasks run: the executor interface, Parsl, local threads, and request grouping."""
