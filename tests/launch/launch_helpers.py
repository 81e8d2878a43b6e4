"""Ray nodes of their own for the launch tests (the ``local_cluster`` fixture of conftest.py):
``ray start --block`` processes on loopback, with token authentication, free ports and a private
temporary folder, so that they never meet another Ray instance on the machine. A node is
stopped by killing its own ``ray start`` process group; what remains of the cluster (workers
end with their raylet) is found by its folder in the processes' command lines."""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = str(Path(sys.executable).parent)
#: Generous: the test machine may be heavily loaded.
START_TIMEOUT_S = 240


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def write_token(path: Path) -> Path:
    """A fresh random token (as ``ray get-auth-token --generate`` makes), readable by us only."""
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(secrets.token_hex(32))
    return path


def ray_env(token_path: Path, **extra: str) -> dict[str, str]:
    """The environment of every command of these tests: token auth with our token only, the
    venv's ``ray`` and ``python`` first on PATH, the checkout importable."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("RAY_", "RAYSWEEP_")) and k != "PYTHONPATH"}
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token_path),
               PATH=f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}", PYTHONPATH=str(REPO),
               OMP_NUM_THREADS="1", RAY_USAGE_STATS_ENABLED="0",
               RAYSWEEP_RAY_LOG_LEVEL="WARNING", **extra)
    return env


class RayNode:
    """One ``ray start --block`` process (a head, or a node joining ``address``)."""

    def __init__(self, env: dict[str, str], temp_dir: Path, log: Path, *, head_port: int | None,
                 address: str | None = None, cpus: int = 1,
                 resources: dict[str, float] | None = None) -> None:
        args = ["ray", "start", "--block", "--disable-usage-stats", "--num-gpus", "0",
                "--num-cpus", str(cpus), "--node-ip-address", "127.0.0.1",
                "--temp-dir", str(temp_dir),
                "--dashboard-agent-listen-port", str(free_port()),
                "--object-store-memory", str(150 * 1024 * 1024)]
        if resources:
            import json

            args += ["--resources", json.dumps(resources)]
        if address is None:
            self.dashboard_port = free_port()
            args += ["--head", "--port", str(head_port), "--dashboard-host", "127.0.0.1",
                     "--dashboard-port", str(self.dashboard_port), "--include-dashboard", "true",
                     "--ray-client-server-port", str(free_port())]
        else:
            args += ["--address", address]
        self.log = log
        self._log_handle = log.open("wb")
        self.process = subprocess.Popen(args, env=env, stdout=self._log_handle,
                                        stderr=subprocess.STDOUT, start_new_session=True)

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> None:
        """Kill our ``ray start`` and its node's processes (its process group, ours alone by
        ``start_new_session``); the node's workers, in sessions of their own, end with their
        raylet (:meth:`LocalCluster.stop` makes sure)."""
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.process.wait(timeout=60)
        self._log_handle.close()


def processes_naming(folder: Path) -> list[int]:
    """Pids of live processes whose command line names ``folder`` (a Ray temp dir of ours)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if str(folder).encode() in cmdline:
                pids.append(int(entry.name))
    return pids


def kill_processes_naming(folder: Path, wait_s: float = 30) -> None:
    """Wait for the processes naming ``folder`` to end, killing those that remain."""
    deadline = time.monotonic() + wait_s
    while (pids := processes_naming(folder)) and time.monotonic() < deadline:
        time.sleep(0.2)
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


class LocalCluster:
    """A head (and optionally more nodes) on loopback with token auth, in a temp folder."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.token = write_token(root / "token")
        self.temp_dir = root / "ray"
        self.env = ray_env(self.token)
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.nodes: list[RayNode] = []

    @property
    def dashboard(self) -> str:
        return f"http://127.0.0.1:{self.nodes[0].dashboard_port}"

    def start_head(self, cpus: int = 2, resources: dict[str, float] | None = None) -> None:
        head = RayNode(self.env, self.temp_dir, self.root / "head.log", head_port=self.port,
                       cpus=cpus, resources=resources)
        self.nodes.append(head)
        self.wait_for_nodes(1)

    def add_node(self, cpus: int = 1, resources: dict[str, float] | None = None) -> None:
        node = RayNode(self.env, self.temp_dir, self.root / f"node{len(self.nodes)}.log",
                       head_port=None, address=self.address, cpus=cpus, resources=resources)
        self.nodes.append(node)
        self.wait_for_nodes(len(self.nodes))

    def wait_for_nodes(self, count: int) -> None:
        """Until ``ray status`` (token-authenticated) counts ``count`` live nodes."""
        deadline = time.monotonic() + START_TIMEOUT_S
        last = ""
        while time.monotonic() < deadline:
            dead = [n for n in self.nodes if not n.alive()]
            if dead:
                pytest.fail(f"ray start exited: {dead[0].log.read_text()[-3000:]}")
            probe = subprocess.run(["ray", "status", "--address", self.address],
                                   env=self.env, capture_output=True, text=True, timeout=120)
            last = probe.stdout + probe.stderr
            active = last.split("Active:")[-1].split("Pending:")[0] if "Active:" in last else ""
            if probe.returncode == 0 and active.count("node_") >= count:
                return
            time.sleep(0.5)  # each `ray status` itself takes seconds
        pytest.fail(f"the Ray cluster did not reach {count} nodes: {last[-2000:]}")

    def stop(self) -> None:
        """Stop every node and every process started under the cluster's folder."""
        for node in self.nodes:
            node.stop()
        kill_processes_naming(self.root)


def run_in_group(args: list[str], env: dict[str, str], timeout: float = 300,
                 cwd: Path = REPO) -> subprocess.CompletedProcess:
    """Run a command in a process group of its own and wait for it; whatever the outcome (a
    timeout, an interrupted test), every process of that group is killed afterwards, so that
    a script's children (a Ray driver, a ``ray start``) cannot outlive the test."""
    process = subprocess.Popen(args, env=env, cwd=cwd, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    finally:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(process.pid, sig)
            except (ProcessLookupError, PermissionError):
                break
            if sig == signal.SIGTERM:  # up to 5 s to end on SIGTERM, then SIGKILL
                deadline = time.monotonic() + 5
                while group_alive(process.pid) and time.monotonic() < deadline:
                    time.sleep(0.1)
        if process.returncode is None:
            process.wait(timeout=30)
    return subprocess.CompletedProcess(args, process.returncode, stdout, stderr)


def group_alive(pgid: int) -> bool:
    """Whether a process of group ``pgid`` still runs (zombies do not count)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False
