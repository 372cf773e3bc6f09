#!/usr/bin/env bash
# Run a command while every core is kept busy, as on a machine about half as fast, or one shared
# with other users: `scripts/busy-cores.sh make test` (that is `make test-stress`).
#
# A test that passes only when the machine is idle races the clock; this is how to find it
# before CI does. One busy loop per core (HPC_CHAT_BUSY_CORES to choose how many) at the same
# priority as the tests. Each loop ends by itself when this script is gone (it checks its
# parent's PID every turn), so nothing keeps burning after Ctrl-C or a kill -9 of the script,
# and on a normal exit they are ended by their own PIDs.
set -uo pipefail
[ $# -gt 0 ] || { echo "usage: $0 COMMAND [ARG...]" >&2; exit 2; }
n=${HPC_CHAT_BUSY_CORES:-$(nproc)}
case $n in ''|*[!0-9]*) echo "$0: HPC_CHAT_BUSY_CORES must be a number, not '$n'" >&2; exit 2;; esac
parent=$$
burners=()
for _ in $(seq 1 "$n"); do
  bash -c 'while kill -0 "$1" 2>/dev/null; do :; done' busy-core "$parent" &
  burners+=($!)
done
stop() { kill "${burners[@]}" 2>/dev/null; wait "${burners[@]}" 2>/dev/null; }
trap stop EXIT
trap 'exit 130' INT TERM
echo "busy-cores: $n busy loops (PIDs ${burners[*]}) while: $*" >&2
"$@"
