#!/bin/bash
# A two-node SLURM cluster on this machine, for tests/slurm, whose nodes are two hosts: node1 and
# node2 each run their slurmd (and so their jobs' processes) in their own network namespace and
# host name, with their own loopback, reachable only over a virtual Ethernet bridge
# (10.231.58.1 and .2; slurmctld and munged stay on this machine, at 10.231.58.254). They split
# this host's CPUs and memory and share its file systems, as nodes share a cluster's. The node
# names resolve to their addresses through lines this script adds to /etc/hosts (removed on
# stop), as a cluster's DNS resolves them. State under $SLURM_TEST_DIR (default
# /tmp/gintune-slurm).
#
#   sudo tests/slurm/cluster.sh start   # installs Debian's slurm-wlm and munge if missing
#   tests/slurm/cluster.sh stop
#
# Needs root (the daemons run as root here, and namespaces need it), Debian's packages and
# iproute2. Time limits and signals are tuned for tests: a job's --signal warning and time limit
# are checked every few seconds.
set -euo pipefail
DIR=${SLURM_TEST_DIR:-/tmp/gintune-slurm}
HOST=$(hostname -s)
NODES="node1 node2"
NET=10.231.58
BRIDGE=gintune-br0
CPUS=$(( $(nproc) / 2 > 0 ? $(nproc) / 2 : 1 ))
MEM=$(( ($(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 1024) / 2 ))
MARK="# gintune tests/slurm/cluster.sh"  # ends the /etc/hosts lines this script adds

stop() {
  for daemon in slurmd slurmctld; do
    pkill -x "$daemon" 2>/dev/null || true
  done
  for _ in $(seq 50); do
    pgrep -x slurmd >/dev/null || pgrep -x slurmctld >/dev/null || break
    sleep 0.1
  done
  for node in $NODES; do
    ip netns del "gintune-$node" 2>/dev/null || true
  done
  ip link del "$BRIDGE" 2>/dev/null || true
  if grep -qF "$MARK" /etc/hosts 2>/dev/null; then
    grep -vF "$MARK" /etc/hosts > /etc/hosts.gintune
    cat /etc/hosts.gintune > /etc/hosts
    rm -f /etc/hosts.gintune
  fi
}

network() {
  ip link add "$BRIDGE" type bridge
  ip addr add "$NET.254/24" dev "$BRIDGE"
  ip link set "$BRIDGE" up
  local i=0
  for node in $NODES; do
    i=$((i + 1))
    ip netns add "gintune-$node"
    ip link add "gintune-h$i" type veth peer name "gintune-n$i"
    ip link set "gintune-n$i" netns "gintune-$node"
    ip -n "gintune-$node" link set "gintune-n$i" name eth0
    ip -n "gintune-$node" addr add "$NET.$i/24" dev eth0
    ip -n "gintune-$node" link set eth0 up
    ip -n "gintune-$node" link set lo up
    ip link set "gintune-h$i" master "$BRIDGE"
    ip link set "gintune-h$i" up
    echo "$NET.$i $node  $MARK" >> /etc/hosts
  done
}

start() {
  if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >/dev/null
  fi
  stop
  mkdir -p "$DIR"/{state,log} "$DIR"/spool/{node1,node2}
  network
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
SlurmctldHost=$HOST($NET.254)
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
NodeName=node1 NodeHostname=node1 NodeAddr=$NET.1 CPUs=$CPUS RealMemory=$MEM State=UNKNOWN
NodeName=node2 NodeHostname=node2 NodeAddr=$NET.2 CPUs=$CPUS RealMemory=$MEM State=UNKNOWN
PartitionName=debug Nodes=node1,node2 Default=YES MaxTime=INFINITE State=UP
CONF
  slurmctld -i
  for node in $NODES; do
    # nsenter, not `ip netns exec`, which would mount a new /sys without the cgroups slurmd reads.
    nsenter --net="/run/netns/gintune-$node" unshare --uts \
      sh -c 'hostname "$0" && exec slurmd -N "$0"' "$node"
  done
  for _ in $(seq 100); do
    if [ "$(sinfo -h -N -o %t 2>/dev/null | grep -c idle)" -eq 2 ]; then
      echo "slurm: two-node cluster up (node1 at $NET.1 and node2 at $NET.2, $CPUS CPUs each)"
      return 0
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
