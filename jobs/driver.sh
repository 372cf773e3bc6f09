#!/bin/bash
# hpc_chat driver job for Slurm: answers every prompt of an input file inside a batch job.
#
#   sbatch --export=ALL,HPC_CHAT_SITE=mysite,HPC_CHAT_INPUT=$PWD/prompts.jsonl,HPC_CHAT_OUTPUT=$PWD/answers.jsonl jobs/driver.sh
#
# `hpc-chat batch` reads HPC_CHAT_INPUT, HPC_CHAT_OUTPUT, HPC_CHAT_SITE (and HPC_CHAT_MODEL)
# itself; HPC_CHAT_ARGS adds options (e.g. "--agents analytical_agent"), HPC_CHAT_BIN names
# the hpc-chat of your environment. Adjust the #SBATCH lines (or pass the same options to
# sbatch) for your account, partition and time. `hpc-chat submit` writes the same job with
# your site profile's values filled in.
#
# HPC_CHAT_MODE=allocation (default): workers start inside THIS job with srun, on all of its
# nodes. HPC_CHAT_MODE=pilot: this job only drives; workers run in pilot jobs that Parsl submits
# through the site's provider (sbatch from inside a job must be allowed on your site).
#
# Resubmitting after a walltime kill resumes the batch (--resume): prompts already answered in
# the output are skipped, and every finished answer was flushed to the output as it arrived.
#SBATCH --job-name=hpc_chat-driver
#SBATCH --nodes=1
#SBATCH --time=01:00:00
#SBATCH --output=hpc_chat-driver-%j.log
set -euo pipefail
case "${HPC_CHAT_MODE:-allocation}" in
  allocation) set -- --in-allocation ;;
  pilot) set -- ;;
  *) echo "driver.sh: HPC_CHAT_MODE must be allocation or pilot, not '$HPC_CHAT_MODE'" >&2; exit 2 ;;
esac
# shellcheck disable=SC2086  # HPC_CHAT_ARGS is split into words on purpose
exec "${HPC_CHAT_BIN:-hpc-chat}" batch --resume "$@" ${HPC_CHAT_ARGS:-}
