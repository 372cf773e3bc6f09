"""One writer per output file: a POSIX record lock on ``OUTPUT.lock`` beside it.

Two runs appending to one output would answer every prompt twice and interleave their lines.
``fcntl.lockf`` (an ``fcntl`` record lock) is the kind of lock NFS carries to the server (through
lockd on NFSv3, natively on v4), unlike ``flock`` on some clients; the kernel (or the NFS
server) releases it when its process dies, so a killed run never leaves a stale lock. The file
says who holds it (host, pid, command, since when), so the refusal names the other run. It is
left in place after the run: deleting a lock file races with a run that is opening it.

The lock is taken for the output's resolved path, so a symlink to an output shares its lock;
a hard link (another name for the same file) does not: do not give one output two names.
"""

from __future__ import annotations

import errno
import fcntl
import os
import socket
import sys
import time
from pathlib import Path

from hpc_chat.errors import InputError
from hpc_chat.util.outputfiles import open_lock


class OutputLock:
    def __init__(self, output: Path):
        self.path = output.with_name(output.name + ".lock")
        self._fd = open_lock(self.path)  # 0600, never through a link
        try:
            fcntl.lockf(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES):  # ENOLCK: no lock service (NFS)
                os.close(self._fd)
                raise InputError(f"{self.path}: cannot lock the output ({exc.strerror}): the "
                                 f"file system gives no locks here (an NFS mount without "
                                 f"lockd?); write the output to another file system") from None
            holder = os.pread(self._fd, 1000, 0).decode(errors="replace").strip()
            os.close(self._fd)
            raise InputError(f"{output}: another run is writing this output "
                             f"({holder or 'holder unknown'}; lock {self.path}). Wait for it "
                             f"to end, or choose another output") from None
        command = " ".join(os.path.basename(a) if i == 0 else a
                           for i, a in enumerate(sys.argv[:4]))
        holder = (f"pid {os.getpid()} on {socket.gethostname()}, '{command}', since "
                  f"{time.strftime('%Y-%m-%d %H:%M:%S')}")
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, holder.encode(), 0)

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing releases the lock
            self._fd = None
