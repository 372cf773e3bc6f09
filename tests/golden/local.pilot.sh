# /bin/bash -c 'echo - ><run_dir>/submit_scripts/parsl.htex.block-0.<time>.sh.ec && { { bash <run_dir>/submit_scripts/parsl.htex.block-0.<time>.sh 1><run_dir>/submit_scripts/parsl.htex.block-0.<time>.sh.out 2><run_dir>/submit_scripts/parsl.htex.block-0.<time>.sh.err ; echo $? > <run_dir>/submit_scripts/parsl.htex.block-0.<time>.sh.ec ; } >/dev/null 2>&1 & echo "PID:$!" ; }'
export PATH="<venv>/bin:$PATH"
export JOBNAME=parsl.htex.block-0.<time>
set -e
export CORES=$(getconf _NPROCESSORS_ONLN)
[[ "1" == "1" ]] && echo "Found cores : $CORES"
WORKERCOUNT=1
FAILONANY=0
PIDS=""

CMD() {
process_worker_pool.py   -a <driver-address> -p 0 -c 0.25 -m None --poll 10 --port=<port> --cert_dir <run_dir>/certificates --logdir=<run_dir>/local_htex --logconf=None --block_id=0 --hb_period=30  --hb_threshold=120 --drain_period=None --cpu-affinity none  --mpi-launcher=mpiexec --available-accelerators 
}
for COUNT in $(seq 1 1 $WORKERCOUNT); do
    [[ "1" == "1" ]] && echo "Launching worker: $COUNT"
    CMD $COUNT &
    PIDS="$PIDS $!"
done

ALLFAILED=1
ANYFAILED=0
for PID in $PIDS ; do
    wait $PID
    if [ "$?" != "0" ]; then
        ANYFAILED=1
    else
        ALLFAILED=0
    fi
done

[[ "1" == "1" ]] && echo "All workers done"
if [ "$FAILONANY" == "1" ]; then
    exit $ANYFAILED
else
    exit $ALLFAILED
fi
