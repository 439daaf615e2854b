#!/bin/bash
# A two-node SLURM cluster on this machine, for tests/slurm: munged, slurmctld, and one slurmd
# for each of the nodes node1 and node2, which split this host's CPUs and memory; state under
# $SLURM_TEST_DIR (default /tmp/gintune-slurm). The node names resolve to 127.0.0.1 through a
# line this script adds to /etc/hosts (and removes on stop), as a cluster's node names resolve.
#
#   sudo tests/slurm/cluster.sh start   # installs Debian's slurm-wlm and munge if missing
#   tests/slurm/cluster.sh stop
#
# Needs root (the daemons run as root here) and Debian's packages. Time limits and signals are
# tuned for tests: a job's --signal warning and time limit are checked every few seconds.
set -euo pipefail
DIR=${SLURM_TEST_DIR:-/tmp/gintune-slurm}
HOST=$(hostname -s)
NODES="node1 node2"
CPUS=$(( $(nproc) / 2 > 0 ? $(nproc) / 2 : 1 ))
MEM=$(( ($(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 1024) / 2 ))
HOSTS_LINE="127.0.0.1 $NODES  # gintune tests/slurm/cluster.sh"

stop() {
  for daemon in slurmd slurmctld; do
    pkill -x "$daemon" 2>/dev/null || true
  done
  for _ in $(seq 50); do
    pgrep -x slurmd >/dev/null || pgrep -x slurmctld >/dev/null || break
    sleep 0.1
  done
  if grep -qF "$HOSTS_LINE" /etc/hosts 2>/dev/null; then
    grep -vF "$HOSTS_LINE" /etc/hosts > /etc/hosts.gintune && cat /etc/hosts.gintune > /etc/hosts
    rm -f /etc/hosts.gintune
  fi
}

start() {
  if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >/dev/null
  fi
  stop
  mkdir -p "$DIR"/{state,log} "$DIR"/spool/{node1,node2}
  echo "$HOSTS_LINE" >> /etc/hosts
  if [ ! -s /etc/munge/munge.key ]; then
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 2>/dev/null
  fi
  chown munge:munge /etc/munge/munge.key 2>/dev/null || true
  chmod 400 /etc/munge/munge.key
  mkdir -p /run/munge && chown munge:munge /run/munge 2>/dev/null || true
  pgrep -x munged >/dev/null || su -s /bin/sh munge -c munged 2>/dev/null || munged --force
  mkdir -p /etc/slurm
  cat > /etc/slurm/slurm.conf <<CONF
ClusterName=gintune-test
SlurmctldHost=$HOST
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool/%n
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd-%n.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd-%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
JobRequeue=1
ReturnToService=2
MpiDefault=none
SlurmctldParameters=enable_configless
InactiveLimit=0
KillWait=30
MinJobAge=600
SlurmctldTimeout=30
SlurmdTimeout=30
NodeName=node1 NodeHostname=$HOST NodeAddr=127.0.0.1 Port=17001 CPUs=$CPUS RealMemory=$MEM State=UNKNOWN
NodeName=node2 NodeHostname=$HOST NodeAddr=127.0.0.1 Port=17002 CPUs=$CPUS RealMemory=$MEM State=UNKNOWN
PartitionName=debug Nodes=node1,node2 Default=YES MaxTime=INFINITE State=UP
CONF
  slurmctld -i
  for node in $NODES; do
    slurmd -N "$node"
  done
  for _ in $(seq 100); do
    if [ "$(sinfo -h -N -o %t 2>/dev/null | grep -c idle)" -eq 2 ]; then
      echo "slurm: two-node cluster up (node1 and node2 on $HOST, $CPUS CPUs each)"; return 0
    fi
    sleep 0.2
  done
  echo "error: the SLURM nodes did not both become idle; see $DIR/log" >&2
  exit 1
}

case "${1:-start}" in
  start) start ;;
  stop) stop ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
