#!/bin/bash
# hpc_chat driver job for site "local-slurm", rendered by `hpc-chat submit` from
# <site_configs>/local-slurm.yaml.
# It answers every prompt of the input into the output file. Resubmitting this same script
# (e.g. after a walltime kill) resumes: prompts already answered are skipped.
#SBATCH --job-name=hpc_chat-prompts
#SBATCH --nodes=1
#SBATCH --time=00:20:00
#SBATCH --output=<hpc_chat_home>/jobs/hpc_chat-prompts-<time>.log
#SBATCH --cpus-per-task=2
#SBATCH --partition=debug

set -euo pipefail

# At the walltime Slurm sends SIGTERM: hpc-chat stops, and every finished answer is already
# in the output file (each is flushed as it completes).
exec <venv>/bin/python -m hpc_chat batch <work>/prompts.jsonl -o <work>/answers.jsonl --site <site_configs>/local-slurm.yaml --resume --in-allocation
