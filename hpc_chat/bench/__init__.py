"""The benchmark suite (``make bench``, ``hpc-chat bench``): see docs/performance.md."""
