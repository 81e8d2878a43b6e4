"""Driver of the two-node test, run as a script (its views function then travels to the Ray
Train workers by value, as ``__main__`` functions do):

    python two_node_driver.py SPEC_JSON STORAGE OUT_JSON

connects to ``RAY_ADDRESS``, pre-trains the spec with :func:`raysweep.runtime.pretrain_driver.run_pretrain`
on CPUs with :func:`fixed_views` in place of the spec's augmentation (identical on any number of
ranks, so that 2 ranks can be compared with 1), and writes to OUT_JSON the run directory, the
live nodes and the node of every Ray Train worker (from Ray's state API).
"""

from __future__ import annotations

import json
import os
import sys

import ray
import torch

from raysweep.config import PretrainSpec, from_dict
from raysweep.runtime.pretrain_driver import run_pretrain


def fixed_views(x: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Two deterministic "views": the batch and its mirror image."""
    return x, x.flip(-1)


def main(spec_json: str, storage: str, out: str) -> None:
    ray.init(address=os.environ["RAY_ADDRESS"], log_to_driver=False)
    spec = from_dict(PretrainSpec, json.loads(spec_json))
    result = run_pretrain(spec, storage_dir=storage, use_gpu=False, _views=fixed_views)
    from ray.util.state import list_actors

    workers = list_actors(filters=[("class_name", "=", "RayTrainWorker")], detail=True,
                          limit=1000, raise_on_missing_output=False)
    with open(out, "w", encoding="utf-8") as handle:
        json.dump({"run_dir": str(result.run_dir),
                   "nodes": sorted(n["NodeID"] for n in ray.nodes() if n["Alive"]),
                   "worker_nodes": sorted(str(a.node_id) for a in workers)}, handle)
    ray.shutdown()


if __name__ == "__main__":
    main(*sys.argv[1:4])
