#!/usr/bin/env bash
# A single-node SLURM cluster (munge, mariadb + slurmdbd for sacct, slurmctld, slurmd) on which
# tests/test_slurm.py runs segtrain's SLURM jobs for real. Debian 12, as root, without systemd;
# missing packages are installed with apt. Idempotent: re-running only starts what is down.
# Adapted from ../shared/reference/slurm-single-node.
#   SLURM_ACCOUNTING=0  skip mariadb/slurmdbd (sacct then fails; submitit can't see FAILED/CANCELLED)
#   SLURM_NCPUS=N       CPUs advertised (default: 4 x nproc, so small test jobs share the cores)
#   SLURM_MEM_MB=N      RealMemory advertised (default: 80% of MemTotal)
set -euo pipefail
ACCT=${SLURM_ACCOUNTING:-1}
H=$(hostname -s)
NCPUS=${SLURM_NCPUS:-$(( 4 * $(nproc) ))}
MEM=${SLURM_MEM_MB:-$(awk '/MemTotal/{print int($2/1024*0.8)}' /proc/meminfo)}
log() { echo "[start_cluster] $*"; }
running() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }   # pidfile -> alive?

pkgs="munge slurmctld slurmd slurm-client"
[ "$ACCT" = 1 ] && pkgs="$pkgs slurmdbd mariadb-server"
missing=$(for p in $pkgs; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || echo "$p"; done | tr "\n" " ")
if [ -n "${missing// /}" ]; then
  log "installing: $missing"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi

getent hosts "$H" >/dev/null || echo "127.0.0.1 $H" >> /etc/hosts
mkdir -p /run/munge /var/lib/slurm/slurmctld /var/lib/slurm/slurmd /var/log/slurm
chown munge:munge /run/munge; chown -R slurm:slurm /var/lib/slurm /var/log/slurm
[ -s /etc/munge/munge.key ] || { mungekey --create --keyfile=/etc/munge/munge.key; chown munge:munge /etc/munge/munge.key; chmod 400 /etc/munge/munge.key; }

if [ "$ACCT" = 1 ]; then
  ACCT_CONF="AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
JobAcctGatherType=jobacct_gather/linux"
else
  ACCT_CONF="AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none"
fi
cat > /etc/slurm/slurm.conf <<EOF
ClusterName=ci
SlurmctldHost=$H
SlurmUser=slurm
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
$ACCT_CONF
SwitchType=switch/none
MailProg=/bin/true
ReturnToService=2
SlurmdParameters=config_overrides
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
StateSaveLocation=/var/lib/slurm/slurmctld
SlurmdSpoolDir=/var/lib/slurm/slurmd
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
KillWait=5
MinJobAge=300
NodeName=$H CPUs=$NCPUS RealMemory=$MEM State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF

running /run/munge/munged.pid || { log "starting munged"; runuser -u munge -- /usr/sbin/munged; }

if [ "$ACCT" = 1 ]; then
  mkdir -p /run/mysqld; chown mysql:mysql /run/mysqld
  if ! running /run/mysqld/mysqld.pid; then
    log "starting mariadbd"
    setsid nohup /usr/sbin/mariadbd --user=mysql >/var/log/slurm/mariadbd.out 2>&1 < /dev/null &
  fi
  for i in $(seq 60); do mariadb-admin ping >/dev/null 2>&1 && break; sleep 0.5; done
  mariadb -e "CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'slurmdbpass';
              GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';"
  cat > /etc/slurm/slurmdbd.conf <<EOF
AuthType=auth/munge
DbdHost=localhost
SlurmUser=slurm
LogFile=/var/log/slurm/slurmdbd.log
PidFile=/run/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StoragePass=slurmdbpass
StorageLoc=slurm_acct_db
EOF
  chown slurm:slurm /etc/slurm/slurmdbd.conf; chmod 600 /etc/slurm/slurmdbd.conf
  running /run/slurmdbd.pid || { log "starting slurmdbd"; slurmdbd; }
  for i in $(seq 60); do sacctmgr -n list cluster >/dev/null 2>&1 && break; sleep 0.5; done
fi

running /run/slurmctld.pid || { log "starting slurmctld"; slurmctld; }
running /run/slurmd.pid || { log "starting slurmd"; slurmd; }

for i in $(seq 120); do
  st=$(sinfo -h -N -n "$H" -o %T 2>/dev/null || true)
  case "$st" in
    idle|mixed|allocated) log "node $H is $st"; sinfo; exit 0 ;;
    *drain*|*down*) scontrol update NodeName="$H" State=RESUME 2>/dev/null || true ;;
  esac
  sleep 0.5
done
log "node never became idle (state: '${st:-?}'); see /var/log/slurm/*.log"; exit 1
