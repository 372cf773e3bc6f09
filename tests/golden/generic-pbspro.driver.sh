#!/bin/bash
# hpc_chat driver job for site "generic-pbspro", rendered by `hpc-chat submit` from
# <site_configs>/generic-pbspro.yaml.
# It answers every prompt of the input into the output file. Resubmitting this same script
# (e.g. after a walltime kill) resumes: prompts already answered are skipped.
#PBS -N hpc_chat-prompts
#PBS -l select=1
#PBS -l walltime=02:00:00
#PBS -j oe
#PBS -o <hpc_chat_home>/jobs/hpc_chat-prompts-<time>.log
#PBS -A YOUR_ACCOUNT
#PBS -q YOUR_QUEUE

set -euo pipefail
cd "${PBS_O_WORKDIR:-$HOME}"

# Environment activation from the site profile (written by the site admin).
source YOUR_VENV/bin/activate


exec hpc-chat batch <work>/prompts.jsonl -o <work>/answers.jsonl --site <site_configs>/generic-pbspro.yaml --resume --in-allocation
