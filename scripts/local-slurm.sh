#!/usr/bin/env bash
# A real single-node Slurm on this machine, for tests and for trying the HPC path on one box.
#
#   scripts/local-slurm.sh up       install (when root and missing), configure and start
#                                   munge, slurmctld and slurmd; wait until the node is idle
#   scripts/local-slurm.sh down     cancel jobs and stop the daemons this script started
#   scripts/local-slurm.sh status   sinfo and squeue
#
# Facts it relies on (Debian 12, Slurm 22.05): proctrack/linuxproc and task/none because
# there is no cgroup setup here, and NO cgroup.conf (22.05 does not know CgroupPlugin=disabled
# and slurmd then refuses to start). State and spool live under $HPC_CHAT_SLURM_DIR.
set -euo pipefail

STATE_DIR=${HPC_CHAT_SLURM_DIR:-/tmp/hpc_chat-slurm}
CONF=/etc/slurm/slurm.conf
HOST=$(hostname -s)

die() { echo "local-slurm: $*" >&2; exit 1; }
say() { echo "local-slurm: $*"; }

node_idle() {
  sinfo -h -N -o '%T' 2>/dev/null | grep -qE '^(idle|mixed|allocated)'
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
  local cpus mem
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
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:4
CONF
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
  echo "--- slurmctld log" >&2; tail -20 "$STATE_DIR/log/slurmctld.log" >&2 || true
  echo "--- slurmd log" >&2; tail -20 "$STATE_DIR/log/slurmd.log" >&2 || true
  die "the node did not become idle within 60 s"
}

down() {
  scancel --user="$(id -un)" 2>/dev/null || true
  for pidfile in "$STATE_DIR/slurmd.pid" "$STATE_DIR/slurmctld.pid"; do
    if [ -f "$pidfile" ]; then
      kill "$(cat "$pidfile")" 2>/dev/null || true
    fi
  done
  say "stopped"
}

status() {
  if ! node_idle && ! sinfo >/dev/null 2>&1; then
    say "not running"; return 1
  fi
  sinfo
  squeue
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
