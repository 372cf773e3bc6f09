"""What every layer uses: YAML loading with errors that name file and key, ``$HPC_CHAT_HOME``
and its checks, output files and locks safe in shared directories, the runtime directory for
sockets, TLS pinned to a per-run certificate, logging, the progress bar."""
