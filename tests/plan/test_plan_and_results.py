"""The sweep's pure parts: plans and packing (the results table: test_row_identity.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from raysweep.config import DatasetSpec, PretrainSpec, SourceSpec, load_spec, spec_from_data
from raysweep.errors import SpecError
from raysweep.plan.resources import (
    ClusterResources,
    TrialResources,
    max_concurrent_trials,
)
from raysweep.plan.trials import make_plan, pretrain_waves

SEARCH_SPACES = Path(__file__).resolve().parents[2] / "search_spaces"
DIGITS = {"sources": [{"kind": "digits"}], "image_size": 16}


def test_every_shipped_spec_validates_and_plans():
    specs = sorted(SEARCH_SPACES.glob("*.yaml"))
    assert {p.stem for p in specs} >= {"paper_isic", "oral_cancer", "medmnist_simclr"}
    for path in specs:
        plan = make_plan(load_spec(path), ClusterResources(cpus=8, gpus=2))
        assert plan.eval_trials or plan.spec.search, path  # a spec evaluates or searches


def test_paper_isic_plan_matches_the_paper():
    spec = load_spec(SEARCH_SPACES / "paper_isic.yaml")
    plan = make_plan(spec, ClusterResources(cpus=32, gpus=4))
    # SL/SSL x {IUD, IU, I} SSL_p + SSL on IUD for both = 8 further pre-training runs.
    assert sorted(r.name for r in spec.pretrain) == sorted(
        [f"{i}-{d}-SSL_p" for i in ("SL", "SSL") for d in ("IUD", "IU", "I")]
        + ["SL-IUD-SSL", "SSL-IUD-SSL"])
    assert all(r.lambda_offdiag == 1 / 8192 and r.alpha == 0.01 for r in spec.pretrain)
    # Table 4: 10 encoders fine-tuned (35 trials each); Table 6: the 8 of them pre-trained once
    # or twice with SSL_p probed (one batched trial each); Table 5: 3 random baselines x 5 runs.
    assert len(plan.eval_trials) == 10 * 35 + 8 + 3 * 5
    assert plan.n_rows == (10 + 8) * 35 + 3 * 5
    assert {t.seeds for t in plan.eval_trials if t.condition.startswith("random-")} == {
        (0,), (1,), (2,), (3,), (4,)}
    # CPUs follow the node's shape: 32 CPUs / 4 GPUs = 8 per GPU, 0.25 GPU a trial -> 2 CPUs;
    # 32 / 2 = 16 trials at once, as many as 4 GPUs / 0.25 hold.
    assert plan.eval_resources == TrialResources(cpu=2, gpu=0.25)
    assert plan.eval_concurrency == 16
    text = plan.describe()
    assert "645 result rows" in text and "up to 16 at once" in text
    assert "random-160: resnet50:random; finetune; 5 trials; 5 seeds" in text


def test_cpu_only_cluster_requests_no_gpu_under_auto():
    spec = load_spec(SEARCH_SPACES / "paper_isic.yaml").replace(
        **{"resources.gpus_per_trial": None})
    plan = make_plan(spec, ClusterResources(cpus=2, gpus=0))
    assert plan.eval_resources.gpu == 0
    assert all(not r.use_gpu for r in plan.pretrain_resources.values())
    assert not plan.unreachable


@pytest.mark.parametrize(("trial", "cluster", "cap", "expected"), [
    (TrialResources(1, 0.25), ClusterResources(16, 1), None, 4),
    (TrialResources(1, 0.25), ClusterResources(2, 1), None, 2),
    (TrialResources(2, 0), ClusterResources(2, 0), None, 1),
    (TrialResources(1, 0.1), ClusterResources(64, 8), 20, 20),
    (TrialResources(4, 0), ClusterResources(2, 0), None, 1),
])
def test_max_concurrent_trials(trial, cluster, cap, expected):
    assert max_concurrent_trials(trial, cluster, cap) == expected


def _run(name: str, weights: str = "random") -> dict:
    return {"name": name, "data": DIGITS, "encoder": {"name": "small_resnet", "weights": weights}}


def test_pretrain_waves_follow_dependencies():
    spec = spec_from_data({"name": "x", "pretrain": [
        _run("further-SL", "pretrain:SL"), _run("SL"), _run("SSL"),
        _run("further-further", "pretrain:further-SL")]})
    waves = [[r.name for r in wave] for wave in pretrain_waves(spec.pretrain)]
    assert waves == [["SL", "SSL"], ["further-SL"], ["further-further"]]


def test_pretrain_cycle_is_an_error():
    runs = [_run("a", "pretrain:b"), _run("b", "pretrain:a")]
    with pytest.raises(SpecError, match=r"pretrain\[0\]\.encoder\.weights: .*cycle: a -> b -> a"):
        spec_from_data({"name": "x", "pretrain": runs})
    with pytest.raises(SpecError, match="cycle: a -> b -> a"):
        pretrain_waves(tuple(PretrainSpec(**{**r, "data": DatasetSpec(sources=(SourceSpec(
            kind="digits"),))}) for r in runs))

