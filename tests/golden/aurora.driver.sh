#!/bin/bash
# hpc_chat driver job for site "aurora", rendered by `hpc-chat submit` from
# <site_configs>/aurora.yaml.
# It answers every prompt of the input into the output file. Resubmitting this same script
# (e.g. after a walltime kill) resumes: prompts already answered are skipped.
#PBS -N hpc_chat-prompts
#PBS -l select=1
#PBS -l walltime=01:00:00
#PBS -j oe
#PBS -o <hpc_chat_home>/jobs/hpc_chat-prompts-<time>.log
#PBS -A YOUR_ACCOUNT
#PBS -q debug
#PBS -l filesystems=home:flare

set -euo pipefail
cd "${PBS_O_WORKDIR:-$HOME}"

# Environment activation from the site profile (written by the site admin).
module load frameworks
source YOUR_VENV/bin/activate


exec hpc-chat batch <work>/prompts.jsonl -o <work>/answers.jsonl --site <site_configs>/aurora.yaml --resume --in-allocation
