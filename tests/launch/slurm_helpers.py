"""A real single-node SLURM of the test's own (Debian's ``slurm-wlm`` with ``munge``): munged,
slurmctld and slurmd started on localhost in a temporary folder with free ports and their own
key, configuration, state and logs, so that they never meet a SLURM of the machine; stopped by
their own process ids afterwards.

Where SLURM is not installed (or the test does not run as root, which slurmd needs to start
jobs) :func:`slurm_missing` gives the reason to skip; ``RAYSWEEP_REQUIRE_SLURM=1`` (set by
``.ci/run``) turns that skip into a failure, so that CI never passes without running it."""

from __future__ import annotations

import getpass
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
from launch_helpers import free_port

DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("sbatch", "sinfo", "scontrol", "scancel", "squeue")
#: Generous: the test machine may be heavily loaded.
START_TIMEOUT_S = 120


def _find(name: str) -> str | None:
    return shutil.which(name) or next(
        (str(p) for p in (Path("/usr/sbin") / name, Path("/sbin") / name) if p.is_file()), None)


def slurm_missing() -> str | None:
    """Why a local SLURM cannot run here (None when it can)."""
    absent = [name for name in (*DAEMONS, *CLIENTS) if _find(name) is None]
    if absent:
        return (f"SLURM is not installed ({', '.join(absent)} not found; Debian: "
                "apt-get install slurm-wlm munge)")
    if os.geteuid() != 0:
        return "the local SLURM needs root (slurmd starts jobs as their user)"
    return None


def require_slurm() -> None:
    """Skip with the reason where SLURM cannot run; fail instead under RAYSWEEP_REQUIRE_SLURM."""
    reason = slurm_missing()
    if reason is None:
        return
    if os.environ.get("RAYSWEEP_REQUIRE_SLURM") == "1":
        pytest.fail(f"RAYSWEEP_REQUIRE_SLURM=1 but {reason}")
    pytest.skip(reason)


SLURM_CONF = """\
ClusterName=raysweep-test
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmUser={user}
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={root}/munge.sock
CredType=cred/munge
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool/%n
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd-%n.pid
SlurmctldLogFile={root}/slurmctld.log
SlurmdLogFile={root}/slurmd-%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SlurmdParameters=config_overrides
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
ReturnToService=2
{nodes}PartitionName=test Nodes=ALL Default=YES MaxTime=INFINITE State=UP
"""
#: One line per node: all on this machine, each slurmd on a port of its own (Debian's SLURM is
#: built with MULTIPLE_SLURMD).
NODE_LINE = ("NodeName={name} NodeHostname=localhost NodeAddr=127.0.0.1 Port={port} "
             "CPUs={cpus} State=UNKNOWN\n")


class LocalSlurm:
    """munged, slurmctld and a slurmd for each of ``nodes`` nodes (``node1``, ``node2``, ...,
    ``cpus`` CPUs each, all on this machine) in ``root``."""

    def __init__(self, root: Path, nodes: int, cpus: int) -> None:
        self.root = root
        self.nodes = [f"node{i}" for i in range(1, nodes + 1)]
        self.cpus = cpus
        self.conf = root / "slurm.conf"
        self.env = {**os.environ, "SLURM_CONF": str(self.conf)}
        self.processes: dict[str, subprocess.Popen] = {}

    def start(self) -> None:
        for folder in ("state", "spool", *(f"spool/{name}" for name in self.nodes)):
            (self.root / folder).mkdir(mode=0o755)
        key = self.root / "munge.key"
        fd = os.open(key, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o400)
        with os.fdopen(fd, "wb") as handle:
            handle.write(os.urandom(1024))
        nodes = "".join(NODE_LINE.format(name=name, port=free_port(), cpus=self.cpus)
                        for name in self.nodes)
        self.conf.write_text(SLURM_CONF.format(root=self.root, ctld_port=free_port(),
                                               user=getpass.getuser(), nodes=nodes))
        root = self.root
        self._start("munged", [_find("munged"), "--foreground", "--force",
                               f"--socket={root}/munge.sock", f"--key-file={key}",
                               f"--pid-file={root}/munged.pid", f"--log-file={root}/munged.log",
                               f"--seed-file={root}/munged.seed"])
        self._wait(lambda: (root / "munge.sock").exists(), "munged")
        self._start("slurmctld", [_find("slurmctld"), "-D", "-f", str(self.conf)])
        for name in self.nodes:
            self._start(f"slurmd-{name}", [_find("slurmd"), "-D", "-f", str(self.conf), "-N", name])
        self._wait(self._nodes_idle, "the nodes to register (sinfo: idle)")

    def _start(self, name: str, args: list[str | None]) -> None:
        log = (self.root / f"{name}.out").open("wb")
        self.processes[name] = subprocess.Popen(
            [str(a) for a in args], env=self.env, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True)
        log.close()

    def _nodes_idle(self) -> bool:
        probe = subprocess.run(["sinfo", "-h", "-N", "-o", "%t"], env=self.env,
                               capture_output=True, text=True, timeout=60)
        return probe.stdout.split() == ["idle"] * len(self.nodes)

    def _wait(self, ready, what: str) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not ready():
            dead = [n for n, p in self.processes.items() if p.poll() is not None]
            if dead or time.monotonic() > deadline:
                pytest.fail(f"local SLURM: waiting for {what}: "
                            f"{', '.join(dead) or 'nothing'} exited\n{self.logs()}")
            time.sleep(0.5)

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-2000:]}"
                         for p in sorted(self.root.glob("*.out")) + sorted(self.root.glob("*.log")))

    def stop(self) -> None:
        """Cancel every job, then stop slurmd, slurmctld and munged (by their process ids)."""
        if "slurmctld" in self.processes:
            subprocess.run(["scancel", "--full", "--partition=test"], env=self.env,
                           capture_output=True, timeout=60)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and subprocess.run(
                    ["squeue", "-h"], env=self.env, capture_output=True, text=True,
                    timeout=60).stdout.strip():
                time.sleep(1)
        for process in reversed(self.processes.values()):
            if process.poll() is not None:
                continue
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=30)
