#!/bin/bash
# hpc_chat driver job for Slurm: answers every prompt of an input file inside a batch job.
#
#   sbatch --export=ALL,HPC_CHAT_SITE=mysite,HPC_CHAT_INPUT=$PWD/prompts.jsonl,HPC_CHAT_OUTPUT=$PWD/answers.jsonl jobs/driver.sh
#
# or set the variables below and run `sbatch jobs/driver.sh`. Adjust the #SBATCH lines (or pass
# the same options to sbatch) for your account, partition and time.
#
# Modes (HPC_CHAT_MODE):
#   allocation  (default) workers start inside THIS job with srun, on all of its nodes;
#               no further jobs are submitted.
#   pilot       this job only drives: workers run in pilot jobs that Parsl submits through
#               the site's provider (sbatch from inside a job must be allowed on your site).
#
# Resubmitting after a walltime kill resumes the batch: prompts already answered in the output
# are skipped (--resume), and every finished answer was flushed to the output as it arrived.
#SBATCH --job-name=hpc_chat-driver
#SBATCH --nodes=1
#SBATCH --time=01:00:00
#SBATCH --output=hpc_chat-driver-%j.log
set -euo pipefail

: "${HPC_CHAT_SITE:=}"      # site profile name or path (hpc-chat sites list)
: "${HPC_CHAT_INPUT:=}"     # JSONL ({"id": ..., "prompt": ...}) or one prompt per line
: "${HPC_CHAT_OUTPUT:=}"    # JSONL results, one line per input line
: "${HPC_CHAT_MODE:=allocation}"
: "${HPC_CHAT_ARGS:=}"      # extra arguments for hpc-chat batch, e.g. "--agents analytical_agent"
: "${HPC_CHAT_BIN:=hpc-chat}"  # or the full path to the hpc-chat of your environment

missing=()
[ -n "$HPC_CHAT_SITE" ] || missing+=(HPC_CHAT_SITE)
[ -n "$HPC_CHAT_INPUT" ] || missing+=(HPC_CHAT_INPUT)
[ -n "$HPC_CHAT_OUTPUT" ] || missing+=(HPC_CHAT_OUTPUT)
if [ ${#missing[@]} -gt 0 ]; then
  echo "driver.sh: set ${missing[*]} (e.g. sbatch --export=ALL,HPC_CHAT_SITE=...,HPC_CHAT_INPUT=...,HPC_CHAT_OUTPUT=... jobs/driver.sh)" >&2
  exit 2
fi
if [ ! -r "$HPC_CHAT_INPUT" ]; then
  echo "driver.sh: cannot read HPC_CHAT_INPUT=$HPC_CHAT_INPUT" >&2
  exit 2
fi
if ! command -v "$HPC_CHAT_BIN" >/dev/null; then
  echo "driver.sh: $HPC_CHAT_BIN not found on PATH; activate the environment with hpc_chat (or set HPC_CHAT_BIN)" >&2
  exit 2
fi

mode_args=()
case "$HPC_CHAT_MODE" in
  allocation) mode_args+=(--in-allocation) ;;
  pilot) ;;
  *) echo "driver.sh: HPC_CHAT_MODE must be allocation or pilot, not '$HPC_CHAT_MODE'" >&2; exit 2 ;;
esac

echo "driver.sh: job ${SLURM_JOB_ID:-?} on $(hostname), mode $HPC_CHAT_MODE, site $HPC_CHAT_SITE"
# shellcheck disable=SC2086  # HPC_CHAT_ARGS is split into words on purpose
exec "$HPC_CHAT_BIN" batch "$HPC_CHAT_INPUT" -o "$HPC_CHAT_OUTPUT" --site "$HPC_CHAT_SITE" \
  --resume "${mode_args[@]}" $HPC_CHAT_ARGS
