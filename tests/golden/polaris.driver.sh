#!/bin/bash
# hpc_chat driver job for site "polaris", rendered by `hpc-chat submit` from
# <site_configs>/polaris.yaml.
# It answers every prompt of the input into the output file. Resubmitting this same script
# (e.g. after a walltime kill) resumes: prompts already answered are skipped.
#PBS -N hpc_chat-prompts
#PBS -l select=1:ngpus=4
#PBS -l walltime=01:00:00
#PBS -j oe
#PBS -o <hpc_chat_home>/jobs/hpc_chat-prompts-<time>.log
#PBS -A YOUR_ACCOUNT
#PBS -q debug
#PBS -l filesystems=home:eagle

set -euo pipefail
cd "${PBS_O_WORKDIR:-$HOME}"

# Environment activation from the site profile (written by the site admin).
module use /soft/modulefiles
module load conda
conda activate YOUR_ENV


exec hpc-chat batch <work>/prompts.jsonl -o <work>/answers.jsonl --site <site_configs>/polaris.yaml --resume --in-allocation
