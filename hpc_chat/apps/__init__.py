"""Parsl applications: pure logic (``logic``), Parsl wrappers (``app``), configs (``config``)."""
