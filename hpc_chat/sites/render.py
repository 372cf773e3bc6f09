"""Dry runs: the exact scripts a site profile produces, without submitting anything.

The pilot-job script is written by Parsl's own provider: we build the real provider and
launcher, swap only its ``execute_wait`` (the single seam through which Parsl runs ``sbatch`` or
``qsub``) for one that records the command and answers like the scheduler, and read back the
script Parsl wrote. The worker launch command is the HighThroughputExecutor's own template, with
the values only known at run time (driver address, port, run directory) shown as ``<...>``.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from unittest import mock

from hpc_chat.sites.build import build_executor
from hpc_chat.sites.schedulers import SCHEDULERS
from hpc_chat.sites.schema import SiteProfile


def launch_command(executor) -> str:
    """The worker pool command HTEX would hand to the provider for block 0."""
    executor.all_addresses = ["<driver-address>"]
    executor.worker_port = "<port>"
    executor.cert_dir = "<run_dir>/certificates" if executor.encrypted else None
    executor.run_dir = "<run_dir>"
    executor.logconf_path = None
    executor.initialize_scaling()
    return executor._get_launch_command("0")


def render_pilot_script(profile: SiteProfile) -> tuple[str, str]:
    """(submit command, script) for one pilot job of this profile, as Parsl would submit it."""
    executor = build_executor(profile)
    provider = executor.provider
    command = launch_command(executor)
    submitted: list[str] = []

    def execute_wait(cmd, timeout=None):
        submitted.append(cmd)
        return 0, SCHEDULERS[profile.scheduler].dry_run_answer, ""

    # Cluster providers run commands through their execute_wait method; LocalProvider calls
    # the module-level function of the same name. Both are replaced, so nothing runs.
    import parsl.providers.local.local as local_module

    with tempfile.TemporaryDirectory(prefix="hpc_chat_render_") as tmp, \
            mock.patch.object(local_module, "execute_wait", execute_wait):
        provider.script_dir = tmp
        provider.execute_wait = execute_wait
        provider.submit(command, 1, "parsl.htex.block-0")
        scripts = [p for p in Path(tmp).iterdir() if p.suffix not in (".stdout", ".stderr")]
        text = scripts[0].read_text() if scripts else ""
        # The temporary directory stands for the run directory Parsl would use.
        text = text.replace(tmp, "<run_dir>/submit_scripts")
        cmd = submitted[0].replace(tmp, "<run_dir>/submit_scripts") if submitted else ""
    return cmd, text


def render_parsl_config(profile: SiteProfile) -> str:
    """Parsl's own ``repr`` of the executor (Parsl objects print their constructor arguments)."""
    return repr(build_executor(profile))
