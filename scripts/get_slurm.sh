#!/bin/sh
# Make a one-node Slurm possible for the tests (tests/slurm_cluster.py starts it): Debian/Ubuntu's
# slurm-wlm (slurmctld, slurmd, srun, scancel) and munge (its authentication daemon), unless they are
# already installed. Quiet and idempotent; needs root or sudo to install.
set -e
if command -v slurmctld >/dev/null 2>&1 && command -v slurmd >/dev/null 2>&1 && command -v srun >/dev/null 2>&1 \
   && command -v munged >/dev/null 2>&1; then exit 0; fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "Slurm not found and apt-get is not available: install slurmctld, slurmd, srun and munged (the real-Slurm tests need them)" >&2
  exit 1
fi
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
echo "installing Slurm (apt packages slurm-wlm and munge)"
# The packages' own services are not started: the tests run their own daemons with a generated configuration.
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null 2>&1 || {
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null; }
