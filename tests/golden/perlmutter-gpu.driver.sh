#!/bin/bash
# hpc_chat driver job for site "perlmutter-gpu", rendered by `hpc-chat submit` from
# <site_configs>/perlmutter-gpu.yaml.
# It answers every prompt of the input into the output file. Resubmitting this same script
# (e.g. after a walltime kill) resumes: prompts already answered are skipped.
#SBATCH --job-name=hpc_chat-prompts
#SBATCH --nodes=1
#SBATCH --time=01:00:00
#SBATCH --output=<hpc_chat_home>/jobs/hpc_chat-prompts-<time>.log
#SBATCH --account=YOUR_ACCOUNT_g
#SBATCH --qos=regular
#SBATCH --constraint=gpu

set -euo pipefail

# Environment activation from the site profile (written by the site admin).
module load python
source YOUR_VENV/bin/activate


# At the walltime Slurm sends SIGTERM: hpc-chat stops, and every finished answer is already
# in the output file (each is flushed as it completes).
exec hpc-chat batch <work>/prompts.jsonl -o <work>/answers.jsonl --site <site_configs>/perlmutter-gpu.yaml --resume --in-allocation
