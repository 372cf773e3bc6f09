# qsub  -q debug -A YOUR_ACCOUNT <run_dir>/submit_scripts/parsl.htex.block-0.<time>
#!/bin/bash

#PBS -S /bin/bash
#PBS -N parsl.htex.block-0.<time>
#PBS -m n
#PBS -l walltime=01:00:00
#PBS -l select=1:ncpus=208
#PBS -o <run_dir>/submit_scripts/parsl.htex.block-0.<time>.stdout
#PBS -e <run_dir>/submit_scripts/parsl.htex.block-0.<time>.stderr
#PBS -l filesystems=home:flare

export PATH="<venv>/bin:$PATH"
module load frameworks
source YOUR_VENV/bin/activate

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
process_worker_pool.py  --max_workers_per_node=12 -a <driver-address> -p 0 -c 1.0 -m None --poll 10 --port=<port> --cert_dir <run_dir>/certificates --logdir=<run_dir>/aurora_htex --logconf=None --block_id=0 --hb_period=30  --hb_threshold=120 --drain_period=3480 --cpu-affinity list:1-8,105-112:9-16,113-120:17-24,121-128:25-32,129-136:33-40,137-144:41-48,145-152:53-60,157-164:61-68,165-172:69-76,173-180:77-84,181-188:85-92,189-196:93-100,197-204  --mpi-launcher=mpiexec --available-accelerators 0.0 0.1 1.0 1.1 2.0 2.1 3.0 3.1 4.0 4.1 5.0 5.1
MPIEXEC_EOF
chmod u+x ${SCRIPT_DIR:+$SCRIPT_DIR/}cmd_$JOBNAME.sh

mpiexec --cpu-bind none --ppn 1 -n $WORKERCOUNT --hostfile $HOSTFILE /usr/bin/sh ${SCRIPT_DIR:+$SCRIPT_DIR/}cmd_$JOBNAME.sh

[[ "1" == "1" ]] && echo "All workers done"


