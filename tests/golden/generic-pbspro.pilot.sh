# qsub  -q YOUR_QUEUE -A YOUR_ACCOUNT <run_dir>/submit_scripts/parsl.htex.block-0.<time>
#!/bin/bash

#PBS -S /bin/bash
#PBS -N parsl.htex.block-0.<time>
#PBS -m n
#PBS -l walltime=01:00:00
#PBS -l select=1:ncpus=32
#PBS -o <run_dir>/submit_scripts/parsl.htex.block-0.<time>.stdout
#PBS -e <run_dir>/submit_scripts/parsl.htex.block-0.<time>.stderr


export PATH="<venv>/bin:$PATH"
module load python

export JOBNAME="parsl.htex.block-0.<time>"

set -e
export CORES=$(getconf _NPROCESSORS_ONLN)
[[ "1" == "1" ]] && echo "Found cores : $CORES"
WORKERCOUNT=1
SCRIPT_DIR="<run_dir>/submit_scripts"
[[ -d $SCRIPT_DIR ]] || SCRIPT_DIR=""

# Deduplicate the nodefile
HOSTFILE="$JOBNAME.nodes"
if [ -z "$PBS_NODEFILE" ]; then
    echo "localhost" > $HOSTFILE
else
    sort -u $PBS_NODEFILE > $HOSTFILE
fi

cat << MPIEXEC_EOF > ${SCRIPT_DIR:+$SCRIPT_DIR/}cmd_$JOBNAME.sh
process_worker_pool.py  --max_workers_per_node=8 -a <driver-address> -p 0 -c 4.0 -m None --poll 10 --port=<port> --cert_dir <run_dir>/certificates --logdir=<run_dir>/generic-pbspro_htex --logconf=None --block_id=0 --hb_period=30  --hb_threshold=120 --drain_period=3480 --cpu-affinity none  --mpi-launcher=mpiexec --available-accelerators 
MPIEXEC_EOF
chmod u+x ${SCRIPT_DIR:+$SCRIPT_DIR/}cmd_$JOBNAME.sh

mpiexec --bind-to none --ppn 1 -n $WORKERCOUNT --hostfile $HOSTFILE /usr/bin/sh ${SCRIPT_DIR:+$SCRIPT_DIR/}cmd_$JOBNAME.sh

[[ "1" == "1" ]] && echo "All workers done"


