"""A small PBS Pro emulator: qsub, qstat -x -f -F json and qdel, run on the local Slurm.

PBS Pro cannot be installed on the test machine, so Parsl's PBSProProvider and jobs/driver.pbs
are tested through these commands (on PATH only inside the tests). A PBS script becomes a Slurm
job whose wrapper sets what PBS would set (PBS_JOBID, PBS_NODEFILE, PBS_O_WORKDIR, PBS_JOBNAME)
and hides Slurm's own variables from the script, so mpiexec behaves as under PBS.

What is emulated: #PBS -N/-o/-e/-j oe/-l walltime/-l select=N[:ncpus=C], qsub -q/-A/-N/-v/-l,
job states Q/R/F with Exit_status. What is not: queues, accounts, arrays, dependencies.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time

SUFFIX = ".pbs-emulator"


def _walltime_minutes(value: str) -> int:
    parts = [int(p) for p in value.split(":")]
    while len(parts) < 3:
        parts.insert(0, 0)
    h, m, s = parts
    return max(1, h * 60 + m + (1 if s else 0))


def parse_directives(script: str) -> dict:
    opts = {"select": 1, "ncpus": None}
    for line in script.splitlines():
        if not line.startswith("#PBS"):
            continue
        args = shlex.split(line[4:])
        apply(args, opts)
    return opts


def apply(args: list[str], opts: dict) -> list[str]:
    """Apply PBS options; returns the positional arguments left over."""
    rest = []
    it = iter(args)
    for arg in it:
        if arg in ("-N", "-o", "-e", "-j", "-q", "-A", "-v", "-S", "-m", "-l"):
            value = next(it, "")
            if arg == "-l":
                for item in value.split(","):
                    key, _, val = item.partition("=")
                    if key == "walltime":
                        opts["walltime"] = val
                    elif key == "select":
                        fields = val.split(":")
                        opts["select"] = int(fields[0] or 1)
                        for f in fields[1:]:
                            k, _, v = f.partition("=")
                            if k == "ncpus":
                                opts["ncpus"] = int(v)
            else:
                opts[arg] = value
        else:
            rest.append(arg)
    return rest


def qsub(argv: list[str]) -> int:
    opts: dict = {"select": 1, "ncpus": None}
    rest = apply(argv, {})
    if not rest:
        print("qsub: no script given (the emulator does not read scripts from stdin)",
              file=sys.stderr)
        return 2
    script_path = os.path.abspath(rest[0])
    with open(script_path) as fh:
        text = fh.read()
    opts.update(parse_directives(text))
    apply(argv, opts)  # command-line options win over directives, as in PBS
    name = opts.get("-N") or os.path.basename(script_path)
    workdir = os.getcwd()
    out = opts.get("-o") or os.path.join(workdir, f"{name}.o%j")
    err = opts.get("-e") or os.path.join(workdir, f"{name}.e%j")
    lines = ["#!/bin/bash", f"#SBATCH --job-name={name}", f"#SBATCH --nodes={opts['select']}",
             f"#SBATCH --output={out}", f"#SBATCH --chdir={os.path.expanduser('~')}"]
    if opts.get("-j") != "oe":
        lines.append(f"#SBATCH --error={err}")
    if opts.get("walltime"):
        lines.append(f"#SBATCH --time={_walltime_minutes(opts['walltime'])}")
    if opts.get("ncpus"):
        lines.append(f"#SBATCH --cpus-per-task={opts['ncpus']}")
    exports = ""
    for pair in (opts.get("-v") or "").split(","):
        if pair:
            key, _, val = pair.partition("=")
            exports += f"export {key}={shlex.quote(val)}\n"
    lines.append(f"""
PBS_JOBID="$SLURM_JOB_ID{SUFFIX}"
PBS_NODEFILE=$(mktemp /tmp/pbs_nodefile.XXXXXX)
scontrol show hostnames "$SLURM_JOB_NODELIST" > "$PBS_NODEFILE"
export PBS_JOBID PBS_NODEFILE
export PBS_O_WORKDIR={shlex.quote(workdir)} PBS_JOBNAME={shlex.quote(name)}
{exports}# A PBS job does not see Slurm's variables (mpiexec would otherwise use Slurm's bootstrap).
for v in $(env | grep -o '^SLURM[A-Z_]*'); do unset "$v"; done
bash {shlex.quote(script_path)}
status=$?
rm -f "$PBS_NODEFILE"
exit $status
""")
    with tempfile.NamedTemporaryFile("w", prefix="pbs_emulator_", suffix=".sh",
                                     delete=False) as fh:
        fh.write("\n".join(lines))
        wrapper = fh.name
    proc = subprocess.run(["sbatch", "--parsable", wrapper], capture_output=True, text=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr)
        return proc.returncode
    print(proc.stdout.strip().split(";")[0] + SUFFIX)
    return 0


STATE = {"PENDING": "Q", "CONFIGURING": "Q", "RUNNING": "R", "COMPLETING": "E",
         "SUSPENDED": "S"}


def _slurm_job(job_id: str) -> dict | None:
    proc = subprocess.run(["scontrol", "show", "job", "-o", job_id], capture_output=True,
                          text=True)
    if proc.returncode != 0 or not proc.stdout.strip():
        return None
    return dict(re.findall(r"(\w+)=(\S*)", proc.stdout))


def qstat(argv: list[str]) -> int:
    ids = [a for a in argv if not a.startswith("-") and a not in ("json",)]
    jobs = {}
    for full in ids:
        info = _slurm_job(full.replace(SUFFIX, ""))
        if info is None:
            continue
        slurm_state = info.get("JobState", "")
        entry = {"Job_Name": info.get("JobName", ""), "job_state": STATE.get(slurm_state, "F"),
                 "queue": info.get("Partition", "")}
        if entry["job_state"] == "F":
            entry["Exit_status"] = int(info.get("ExitCode", "0:0").split(":")[0])
        jobs[full if full.endswith(SUFFIX) else full + SUFFIX] = entry
    if "-F" in argv:
        print(json.dumps({"timestamp": int(time.time()), "pbs_version": "emulator",
                          "pbs_server": "emulator", "Jobs": jobs}))
    else:
        for job_id, entry in jobs.items():
            print(f"{job_id} {entry['Job_Name']} {entry['job_state']}")
    return 0 if jobs or not ids else 153  # PBS: "Unknown Job Id"


def qdel(argv: list[str]) -> int:
    ids = [a.replace(SUFFIX, "") for a in argv if not a.startswith("-")]
    return subprocess.run(["scancel", *ids]).returncode


def main() -> int:
    command = os.path.basename(sys.argv[0])
    return {"qsub": qsub, "qstat": qstat, "qdel": qdel}[command](sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
