"""``launch/cluster.yaml`` and the launch README as written: Ray's own cluster-launcher schema
accepts the file; raysweep is installed from the synced checkout, not from unmounted storage;
every node starts with token authentication and the dashboard on loopback; the scripts parse;
the README's commands name files that exist."""

from __future__ import annotations

import copy
import re
import subprocess

import yaml
from launch_helpers import REPO
from ray.autoscaler._private.util import prepare_config, validate_config

LAUNCH = REPO / "launch"


def cluster_file() -> dict:
    return yaml.safe_load((LAUNCH / "cluster.yaml").read_text())


def test_ray_accepts_the_cluster_file():
    prepared = prepare_config(copy.deepcopy(cluster_file()))  # what `ray up` does first
    validate_config(prepared)
    workers = [t for t in prepared["available_node_types"].values() if t["resources"].get("GPU")]
    assert workers and all(t["min_workers"] == 0 < t["max_workers"] for t in workers)


def test_raysweep_is_installed_from_the_synced_checkout():
    config = cluster_file()
    mounts = config["file_mounts"]
    checkout = next(remote for remote, local in mounts.items() if local == ".")
    install = [c for c in config["setup_commands"] if "pip install" in c]
    assert len(install) == 1 and checkout in install[0] and "/shared" not in install[0]
    assert ".git" in config["rsync_exclude"]
    # shared storage is mounted, and linked where the shipped specs keep storage and data
    assert any("mount" in c and "/shared" in c for c in config["initialization_commands"])
    links = " ".join(c for c in config["setup_commands"] if "ln -s" in c)
    assert "raysweep_runs" in links and "data" in links
    for name in ("cluster_smoke", "paper_isic"):
        spec = yaml.safe_load((REPO / "search_spaces" / f"{name}.yaml").read_text())
        assert spec["storage"] == "~/raysweep_runs", name


def test_every_node_starts_with_token_auth_and_a_loopback_dashboard():
    config = cluster_file()
    token_file = next(remote for remote in config["file_mounts"] if "token" in remote)
    head = " ".join(config["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head
    for commands in (config["head_start_ray_commands"], config["worker_start_ray_commands"]):
        start = next(c for c in commands if "ray start" in c)
        assert "RAY_AUTH_MODE=token" in start
        token_path = re.search(r"RAY_AUTH_TOKEN_PATH=(\S+)", start).group(1)
        assert token_path.replace("$HOME", "~") == token_file
    assert any("chmod 600" in c and token_file in c for c in config["setup_commands"])


def test_the_scripts_parse():
    for script in ("submit.sh", "local_multi_gpu.sh", "slurm.sbatch"):
        proc = subprocess.run(["bash", "-n", str(LAUNCH / script)], capture_output=True,
                              text=True)
        assert proc.returncode == 0, proc.stderr


def test_the_readme_names_files_that_exist_and_a_study_in_one_command():
    readme = (LAUNCH / "README.md").read_text()
    named = set(re.findall(r"(?:launch|search_spaces)/[\w.]+\.(?:sh|yaml|ipynb)", readme))
    assert {"launch/cluster.yaml", "launch/submit.sh", "launch/local_multi_gpu.sh",
            "search_spaces/cluster_smoke.yaml"} <= named
    missing = sorted(name for name in named if not (REPO / name).is_file())
    assert not missing
    commands = readme.split("```bash")[2].split("```")[0]
    for step in ("ray up launch/cluster.yaml", "ray dashboard launch/cluster.yaml",
                 "bash launch/submit.sh search_spaces/paper_isic.yaml", "raysweep status",
                 "ray down launch/cluster.yaml", "RAY_AUTH_TOKEN_PATH"):
        assert step in commands, step
