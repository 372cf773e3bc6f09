# sbatch <run_dir>/submit_scripts/parsl.htex.block-0.<time>
#!/bin/bash

#SBATCH --job-name=parsl.htex.block-0.<time>
#SBATCH --output=<run_dir>/submit_scripts/parsl.htex.block-0.<time>.stdout
#SBATCH --error=<run_dir>/submit_scripts/parsl.htex.block-0.<time>.stderr
#SBATCH --nodes=1
#SBATCH --time=60
#SBATCH --ntasks-per-node=1

#SBATCH --partition=gpuA100x4
#SBATCH --account=YOUR_ACCOUNT-delta-gpu
#SBATCH --gpus-per-node=4
#SBATCH --mem=200g
#SBATCH --cpus-per-task=64

export PATH="<venv>/bin:$PATH"
module load python
source YOUR_VENV/bin/activate
export PARSL_MEMORY_GB=200
export PARSL_CORES=64


export JOBNAME="parsl.htex.block-0.<time>"

set -e
export CORES=$SLURM_CPUS_ON_NODE
export NODES=$SLURM_JOB_NUM_NODES

[[ "1" == "1" ]] && echo "Found cores : $CORES"
[[ "1" == "1" ]] && echo "Found nodes : $NODES"
WORKERCOUNT=1
SCRIPT_DIR="<run_dir>/submit_scripts"
[[ -d $SCRIPT_DIR ]] || SCRIPT_DIR=""

cat << SLURM_EOF > ${SCRIPT_DIR:+$SCRIPT_DIR/}cmd_$SLURM_JOB_NAME.sh
process_worker_pool.py  --max_workers_per_node=4 -a <driver-address> -p 0 -c 16.0 -m None --poll 10 --port=<port> --cert_dir <run_dir>/certificates --logdir=<run_dir>/delta_htex --logconf=None --block_id=0 --hb_period=30  --hb_threshold=120 --drain_period=3480 --cpu-affinity none  --mpi-launcher=mpiexec --available-accelerators 0 1 2 3
SLURM_EOF
chmod a+x ${SCRIPT_DIR:+$SCRIPT_DIR/}cmd_$SLURM_JOB_NAME.sh

srun --ntasks 1 -l  bash ${SCRIPT_DIR:+$SCRIPT_DIR/}cmd_$SLURM_JOB_NAME.sh

[[ "1" == "1" ]] && echo "Done"

