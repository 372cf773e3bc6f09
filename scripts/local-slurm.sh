#!/usr/bin/env bash
# A real single-node Slurm on this machine, for tests and for trying the HPC path on one box.
#
#   scripts/local-slurm.sh up       install (when root and missing), configure and start
#                                   munge, slurmctld and slurmd; wait until the node is idle
#   scripts/local-slurm.sh up --nodes 2
#                                   the same, plus a second node, "node2" (named <host>-node2):
#                                   a slurmd in its own network namespace (hpc_chat-node2, veth
#                                   pair hpc_chat0: 10.217.2.1 on the host, 10.217.2.2 on node2),
#                                   its own hostname (unshare --uts) and spool directory.
#                                   Partition `debug` stays the host's node alone (the default,
#                                   as with one node); partition `multi` holds both nodes. Run
#                                   it again to bring node2 back after it died (only node2 is
#                                   restarted then). `up` without --nodes leaves a running node2
#                                   alone; `down` then `up` gives the one-node setup again.
#   scripts/local-slurm.sh down     cancel jobs and stop the daemons this script started; with
#                                   node2: kill every process in its namespace and delete the
#                                   namespace and its veth pair (nothing else is touched)
#   scripts/local-slurm.sh status   sinfo and squeue
#
# node2 shares this machine's CPUs, memory and file system (the venv, $HPC_CHAT_HOME); only its
# network, hostname and Slurm files are its own. Nothing is routed: ip_forward is not touched,
# the namespace has no default route, so node2 talks to the host's veth address and nothing else.
# Inside the namespace /etc/slurm/slurm.conf is node2's own copy (bind-mounted in a private
# mount namespace): the controller's address there is the host side of the veth.
#
# Facts it relies on (Debian 12, Slurm 22.05): proctrack/linuxproc and task/none because
# there is no cgroup setup here, and NO cgroup.conf (22.05 does not know CgroupPlugin=disabled
# and slurmd then refuses to start). State and spool live under $HPC_CHAT_SLURM_DIR.
set -euo pipefail

STATE_DIR=${HPC_CHAT_SLURM_DIR:-/tmp/hpc_chat-slurm}
CONF=/etc/slurm/slurm.conf
HOST=$(hostname -s)
# --nodes 2 only: node2 and its network (private addresses, nothing routed beyond the pair)
# Slurm orders a job's nodes by name and runs its batch step on the first: node2's name starts
# with the host's so the host's node comes first, and a dying node2 never takes a job's batch
# script (a pilot job's srun, a driver job's driver) with it.
NODE2=${HOST}-node2
NS=hpc_chat-node2
# Both ends of the veth pair have the same name (each in its own namespace), so a site
# profile's `interface: hpc_chat0` gives a driver the right address on either node.
VETH_HOST=hpc_chat0
VETH_NODE=hpc_chat0
HOST_ADDR=10.217.2.1
NODE2_ADDR=10.217.2.2
NODE2_DIR=$STATE_DIR/node2
SLURMD_TIMEOUT=20          # seconds before a silent node is marked DOWN (Slurm: 300)

die() { echo "local-slurm: $*" >&2; exit 1; }
say() { echo "local-slurm: $*"; }

node_idle() {
  sinfo -h -N -o '%T' 2>/dev/null | grep -qE '^(idle|mixed|allocated)'
}

give_up() {  # give_up MESSAGE LOG...: the end of each log, what sinfo says, then die
  local message=$1 log
  shift
  for log in "$@"; do
    echo "--- $log" >&2; tail -20 "$log" >&2 || true
  done
  sinfo >&2 || true
  die "$message"
}

install_packages() {
  if command -v slurmctld >/dev/null && command -v munged >/dev/null; then
    return
  fi
  [ "$(id -u)" = 0 ] || die "slurm-wlm and munge are not installed and this is not root; ask an admin to install them"
  say "installing slurm-wlm and munge (about 20 s)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >/dev/null
}

start_munge() {
  if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    return
  fi
  [ -f /etc/munge/munge.key ] || die "/etc/munge/munge.key is missing (reinstall munge)"
  mkdir -p /run/munge /var/log/munge /var/lib/munge
  chown munge:munge /run/munge /var/log/munge /var/lib/munge
  su -s /bin/sh munge -c /usr/sbin/munged
  for _ in $(seq 20); do
    munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && return
    sleep 0.5
  done
  die "munged did not start (see /var/log/munge/munged.log)"
}

write_conf() {
  local nodes=${1:-1} cpus mem
  cpus=$(nproc)
  mem=$(awk '/MemTotal/ {printf "%d", $2 / 1024 * 0.8}' /proc/meminfo)
  mkdir -p "$STATE_DIR"/{state,spool,log} /etc/slurm
  rm -f /etc/slurm/cgroup.conf
  cat > "$CONF" <<CONF
# Written by hpc_chat scripts/local-slurm.sh: a single-node Slurm for tests.
ClusterName=local
SlurmctldHost=${HOST}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
StateSaveLocation=${STATE_DIR}/state
SlurmdSpoolDir=${STATE_DIR}/spool
SlurmctldPidFile=${STATE_DIR}/slurmctld.pid
SlurmdPidFile=${STATE_DIR}/slurmd.pid
SlurmctldLogFile=${STATE_DIR}/log/slurmctld.log
SlurmdLogFile=${STATE_DIR}/log/slurmd.log
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2
MinJobAge=300
NodeName=${HOST} NodeAddr=127.0.0.1 CPUs=${cpus} RealMemory=${mem} State=UNKNOWN
CONF
  if [ "$nodes" = 1 ]; then
    echo "PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:4" >> "$CONF"
    return
  fi
  cat >> "$CONF" <<CONF
# --nodes 2: node2 is a slurmd in the network namespace ${NS} (scripts/local-slurm.sh).
# A dead node is marked DOWN after SlurmdTimeout; node2 reads its own copy of this file
# (another controller address), hence NO_CONF_HASH.
SlurmdTimeout=${SLURMD_TIMEOUT}
DebugFlags=NO_CONF_HASH
NodeName=${NODE2} NodeAddr=${NODE2_ADDR} CPUs=${cpus} RealMemory=${mem} State=UNKNOWN
PartitionName=debug Nodes=${HOST} Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:4
PartitionName=multi Nodes=${HOST},${NODE2} MaxTime=INFINITE State=UP OverSubscribe=FORCE:4
CONF
  # node2's copy: the controller is reached through the veth; its own spool, pid and log.
  mkdir -p "$NODE2_DIR"/{spool,log}
  sed -e "s|^SlurmctldHost=.*|SlurmctldHost=${HOST}(${HOST_ADDR})|" \
      -e "s|^SlurmdSpoolDir=.*|SlurmdSpoolDir=${NODE2_DIR}/spool|" \
      -e "s|^SlurmdPidFile=.*|SlurmdPidFile=${NODE2_DIR}/slurmd.pid|" \
      -e "s|^SlurmdLogFile=.*|SlurmdLogFile=${NODE2_DIR}/log/slurmd.log|" \
      "$CONF" > "$NODE2_DIR/slurm.conf"
  printf '127.0.0.1 localhost\n%s %s\n%s %s\n' "$NODE2_ADDR" "$NODE2" "$HOST_ADDR" "$HOST" \
    > "$NODE2_DIR/hosts"
}

node_usable() {  # NODE: idle, mixed, allocated or completing
  sinfo -h -n "$1" -N -o '%T' 2>/dev/null | grep -qE '^(idle|mixed|allocated|completing)'
}

netns_exists() { [ -e "/run/netns/$NS" ]; }

ns_pids() { netns_exists && ip netns pids "$NS" 2>/dev/null || true; }

kill_ns_processes() {  # every process in node2's namespace: TERM, then KILL what is left
  local pids
  pids=$(ns_pids)
  [ -n "$pids" ] || return 0
  # shellcheck disable=SC2086
  kill $pids 2>/dev/null || true
  for _ in $(seq 20); do
    [ -z "$(ns_pids)" ] && return 0
    sleep 0.25
  done
  pids=$(ns_pids)
  # shellcheck disable=SC2086
  [ -z "$pids" ] || kill -9 $pids 2>/dev/null || true
}

make_netns() {
  if netns_exists && ip link show "$VETH_HOST" >/dev/null 2>&1; then
    return
  fi
  netns_exists && ip netns del "$NS"
  ip link del "$VETH_HOST" 2>/dev/null || true
  ip netns add "$NS"
  ip link add "$VETH_HOST" type veth peer name "$VETH_NODE" netns "$NS"
  ip addr add "${HOST_ADDR}/30" dev "$VETH_HOST"
  ip link set "$VETH_HOST" up
  ip -n "$NS" link set lo up
  ip -n "$NS" addr add "${NODE2_ADDR}/30" dev "$VETH_NODE"
  ip -n "$NS" link set "$VETH_NODE" up
}

start_node2() {
  make_netns
  kill_ns_processes  # a half-dead node2 (its slurmd gone, job processes left)
  rm -f "$NODE2_DIR/slurmd.pid"
  # A private mount namespace: node2's slurm.conf and hosts over the host's, for slurmd and
  # every job process it starts (srun/scontrol inside a job on node2 find the controller).
  # nsenter, not `ip netns exec`: that remounts /sys, hiding /sys/fs/cgroup from slurmd.
  nsenter --net="/run/netns/$NS" unshare --uts --mount --propagation private sh -c "
    hostname '$NODE2'
    mount --bind '$NODE2_DIR/slurm.conf' '$CONF'
    mount --bind '$NODE2_DIR/hosts' /etc/hosts
    exec /usr/sbin/slurmd -N '$NODE2'"
}

restart_controller_and_node() {  # as plain `up` does
  pkill -x slurmd 2>/dev/null || true
  pkill -x slurmctld 2>/dev/null || true
  sleep 1
  /usr/sbin/slurmctld
  sleep 2
  /usr/sbin/slurmd
}

up_two() {
  if node_usable "$HOST" && node_usable "$NODE2" && [ -n "$(ns_pids)" ]; then
    say "already up (2 nodes)"; sinfo; return
  fi
  [ "$(id -u)" = 0 ] || die "starting node2 needs root"
  install_packages
  start_munge
  if grep -q "^NodeName=${NODE2} " "$CONF" 2>/dev/null && node_usable "$HOST"; then
    say "restarting ${NODE2} only"
  else
    kill_ns_processes
    write_conf 2
    restart_controller_and_node
  fi
  start_node2
  for _ in $(seq 90); do
    if node_usable "$HOST" && node_usable "$NODE2"; then
      say "up: nodes ${HOST} (partitions debug, multi) and ${NODE2} at ${NODE2_ADDR} (partition multi)"
      sinfo
      return
    fi
    sleep 1
  done
  give_up "the nodes did not become idle within 90 s" "$STATE_DIR/log/slurmctld.log" \
    "$NODE2_DIR/log/slurmd.log"
}

up() {
  if node_idle; then
    say "already up"; sinfo; return
  fi
  [ "$(id -u)" = 0 ] || die "Slurm is not running and starting it needs root"
  install_packages
  start_munge
  write_conf
  pkill -x slurmd 2>/dev/null || true
  pkill -x slurmctld 2>/dev/null || true
  sleep 1
  /usr/sbin/slurmctld
  sleep 2
  /usr/sbin/slurmd
  for _ in $(seq 60); do
    if node_idle; then
      say "up: node ${HOST} with $(nproc) CPUs in partition debug"
      sinfo
      return
    fi
    sleep 1
  done
  give_up "the node did not become idle within 60 s" "$STATE_DIR/log/slurmctld.log" \
    "$STATE_DIR/log/slurmd.log"
}

down() {
  scancel --user="$(id -un)" 2>/dev/null || true
  for pidfile in "$STATE_DIR/slurmd.pid" "$STATE_DIR/slurmctld.pid"; do
    if [ -f "$pidfile" ]; then
      kill "$(cat "$pidfile")" 2>/dev/null || true
    fi
  done
  if netns_exists; then
    kill_ns_processes
    ip netns del "$NS"
    say "removed ${NODE2}: its processes and the network namespace ${NS}"
  fi
  if ip link show "$VETH_HOST" >/dev/null 2>&1; then
    ip link del "$VETH_HOST"
  fi
  say "stopped"
}

status() {
  if ! node_idle && ! sinfo >/dev/null 2>&1; then
    say "not running"; return 1
  fi
  sinfo
  squeue
  if netns_exists; then
    echo "${NODE2}: network namespace ${NS}, $(ns_pids | wc -w) process(es) in it"
  fi
}

usage() { echo "usage: $0 up [--nodes 1|2] | down | status" >&2; exit 2; }

case "${1:-}" in
  up)
    nodes=1
    case "${2:-}" in
      "") ;;
      --nodes) nodes=${3:-} ;;
      --nodes=*) nodes=${2#--nodes=} ;;
      *) usage ;;
    esac
    case "$nodes" in
      1) up ;;
      2) up_two ;;
      *) die "--nodes must be 1 or 2 (one real node and node2 in a network namespace)" ;;
    esac ;;
  down) down ;;
  status) status ;;
  *) usage ;;
esac
