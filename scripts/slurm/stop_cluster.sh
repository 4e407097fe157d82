#!/usr/bin/env bash
# Stops the single-node SLURM cluster of start_cluster.sh (by pidfile, no pkill).
set -u
if command -v squeue >/dev/null && squeue -h >/dev/null 2>&1; then
  ids=$(squeue -h -o %i); [ -n "$ids" ] && scancel $ids
  for i in $(seq 20); do [ -z "$(squeue -h -o %i 2>/dev/null)" ] && break; sleep 0.5; done
fi
for pf in /run/slurmd.pid /run/slurmctld.pid /run/slurmdbd.pid /run/mysqld/mysqld.pid /run/munge/munged.pid; do
  [ -s "$pf" ] || continue
  pid=$(cat "$pf")
  if kill -0 "$pid" 2>/dev/null; then
    echo "[stop_cluster] stopping $(cat /proc/$pid/comm) ($pid)"
    kill "$pid"
    for i in $(seq 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    kill -0 "$pid" 2>/dev/null && { echo "[stop_cluster] $pid still alive, SIGKILL"; kill -9 "$pid"; }
  fi
  rm -f "$pf"
done
