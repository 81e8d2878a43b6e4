"""Starting Ray, or joining the cluster a job runs on: the one ``ray.init`` of raysweep, used by
every command that needs Ray (``raysweep run``, ``pretrain``, ``evaluate``, ``search``, the
pre-training driver)."""

from __future__ import annotations

import os
import socket

import ray

from raysweep.console import ray_log_level

__all__ = ["ensure_ray"]


def ensure_ray(num_cpus: int | None = None) -> None:
    """Connect to the cluster in ``RAY_ADDRESS`` (``ray job submit`` sets it), or start a
    local Ray instance bound to 127.0.0.1, with its dashboard on 127.0.0.1 too.

    The dashboard carries Ray's State API, which Ray Train 2.60 queries once a second from a
    detached ``PlacementGroupCleaner`` actor per run (to free the run's placement group if its
    controller dies). Without it every query fails and logs "Failed to query Ray Train
    Controller actor state" once a second for the whole run. The job's workers are told the
    dashboard's address (``RAY_API_SERVER_ADDRESS``), so the cleaner does not have to guess it
    among the other Ray instances a shared machine may run.
    """


    if ray.is_initialized():
        return
    # Workers log at WARNING: Ray Train's per-epoch INFO lines would drown the progress lines.
    quiet = ray.LoggingConfig(log_level=ray_log_level())
    address = os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, logging_config=quiet)
        return
    port = _free_local_port()
    ray.init(num_cpus=num_cpus, _node_ip_address="127.0.0.1", logging_config=quiet,
             include_dashboard=True, dashboard_host="127.0.0.1", dashboard_port=port,
             runtime_env={"env_vars": {"RAY_API_SERVER_ADDRESS": f"http://127.0.0.1:{port}"}})


def _free_local_port() -> int:
    """A TCP port free on 127.0.0.1 right now (for the local dashboard)."""

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def stop_ray() -> None:
    """Shut down this driver's Ray (the local instance it started, or its cluster connection)."""

    if ray.is_initialized():
        ray.shutdown()
