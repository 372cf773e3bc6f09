"""``python -m hpc_chat`` runs the same CLI as the ``hpc-chat`` command."""

from hpc_chat.cli import main

if __name__ == "__main__":
    main()
