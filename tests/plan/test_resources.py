"""Resources from the spec, not from a snapshot: explicit GPU requests are always made, ``auto``
looks at the cluster's current and autoscalable node types (fake clusters, no Ray)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import yaml
from ray.core.generated import autoscaler_pb2

from raysweep.config import DatasetSpec, EncoderSpec, PretrainSpec, spec_from_data
from raysweep.environment import EnvironmentProblem
from raysweep.errors import SpecError
from raysweep.plan import resources
from raysweep.plan.preflight import pretrain_gpu_problem
from raysweep.plan.resources import (
    AutoscalerView,
    ClusterResources,
    NodeType,
    TrialResources,
    autoscaler_view,
    concurrent_pretrain_runs,
    max_concurrent_trials,
    pretrain_resources,
    view_from_cluster_config,
    view_from_launcher_config,
)
from raysweep.plan.trials import make_plan
from raysweep.runtime.pretrain_driver import preflight

LAUNCH = Path(__file__).resolve().parents[2] / "launch"
DIGITS = {"sources": [{"kind": "digits", "classes": ["0", "1"]}], "image_size": 16}

#: The shipped cluster file's shape: an 8-CPU head, 0-8 GPU workers of 32 CPUs and 4 GPUs.
GPU_AUTOSCALER = AutoscalerView(
    source="test", node_types=(NodeType("head", 8, 0, 1), NodeType("gpu_worker", 32, 4, 8)))
CPU_AUTOSCALER = AutoscalerView(
    source="test", node_types=(NodeType("head", 8, 0, 1), NodeType("cpu_worker", 16, 0, 4)))


def experiment(gpus_per_trial=None, **pretrain) -> dict:
    run = {"name": "P", "data": DIGITS, "encoder": {"name": "small_resnet"}, "batch_size": 16,
           "projector": [32, 32], **pretrain}
    return spec_from_data({
        "name": "exp", "pretrain": [run],
        "evaluate": {"data": DIGITS, "seeds": 8, "protocols": ["finetune"], "encoders": [
            {"name": "P", "encoder": {"name": "small_resnet", "weights": "pretrain:P"}}]},
        "resources": {"cpus_per_trial": 2, "gpus_per_trial": gpus_per_trial}})


# ------------------------------------------------------------------------ explicit requests


def test_explicit_gpu_requests_are_made_on_a_cpu_cluster_that_can_add_gpu_nodes():
    spec = experiment(gpus_per_trial=0.25, use_gpu=True, num_workers=2)
    plan = make_plan(spec, ClusterResources(cpus=8, gpus=0, autoscaler=GPU_AUTOSCALER))
    assert plan.eval_resources == TrialResources(cpu=2, gpu=0.25)
    assert plan.pretrain_resources["P"].use_gpu and plan.pretrain_resources["P"].total_gpus == 2
    # Concurrency from what the cluster can become: 264 CPUs / 2 = 132, 32 GPUs / 0.25 = 128,
    # capped by the 8 trials there are.
    assert plan.eval_concurrency == 8
    assert not plan.unreachable
    text = plan.describe()
    assert "0 GPUs now" in text and "gpu_worker (up to 8 x 32 CPU, 4 GPU)" in text
    assert "up to 264 CPUs, 32 GPUs" in text
    assert "0.25 GPU (spec: resources.gpus_per_trial)" in text
    assert "2 whole GPU" not in text and "1 whole GPU each (use_gpu: true in the spec)" in text
    waits = [line for line in text.splitlines() if "waiting for the autoscaler" in line]
    assert len(waits) == 2  # the pretrain run and the evaluation trials


def test_explicit_gpu_requests_on_a_fixed_cpu_cluster_cannot_run():
    spec = experiment(gpus_per_trial=0.25, use_gpu=True)
    plan = make_plan(spec, ClusterResources(cpus=8, gpus=0))
    assert plan.eval_resources.gpu == 0.25 and plan.pretrain_resources["P"].use_gpu
    assert set(plan.unreachable_pretrain) == {"P"}
    assert len(plan.unreachable_evaluate) == 1
    assert "no autoscaler that can add GPU nodes was found" in plan.unreachable_evaluate[0]
    assert plan.describe().count("cannot run on this cluster:") == 2


def test_an_autoscaler_whose_node_types_have_too_few_gpus_cannot_run_a_big_ddp_run():
    small = AutoscalerView(source="test", node_types=(NodeType("g", 8, 1, 2),))
    spec = experiment(use_gpu=True, num_workers=4, batch_size=16)
    plan = make_plan(spec, ClusterResources(cpus=8, gpus=0, autoscaler=small))
    assert "its autoscaler can reach at most 2" in plan.unreachable_pretrain["P"]


def test_gpus_per_trial_zero_means_cpu_even_on_a_gpu_cluster():
    plan = make_plan(experiment(gpus_per_trial=0.0), ClusterResources(cpus=8, gpus=4))
    assert plan.eval_resources.gpu == 0


def test_resources_per_worker_gpu_asks_for_whole_gpus_per_worker():
    spec = experiment(num_workers=2, resources_per_worker={"CPU": 4, "GPU": 2})
    res = pretrain_resources(spec.pretrain[0], ClusterResources(cpus=64, gpus=0))
    assert res.use_gpu and res.gpus_per_worker == 2 and res.total_gpus == 4
    assert res.total_cpus == 8 and "resources_per_worker.GPU" in res.basis


@pytest.mark.parametrize(("changes", "message"), [
    ({"resources_per_worker": {"GPU": 0.5}}, "must be a whole number of GPUs"),
    ({"resources_per_worker": {"GPU": 1}, "use_gpu": False}, "is 1 but use_gpu is false"),
    ({"resources_per_worker": {"GPU": 0}, "use_gpu": True}, "is 0 but use_gpu is true"),
])
def test_gpu_fields_that_contradict_each_other_are_refused(changes, message):
    with pytest.raises(SpecError, match=message):
        experiment(**changes)


# ------------------------------------------------------------------------------- auto


def test_auto_uses_gpus_the_autoscaler_can_add():
    plan = make_plan(experiment(), ClusterResources(cpus=8, gpus=0, autoscaler=GPU_AUTOSCALER))
    assert plan.eval_resources.gpu == resources.DEFAULT_GPU_FRACTION
    assert plan.pretrain_resources["P"].use_gpu
    assert "default: the autoscaler can add GPU nodes" in plan.describe()


def test_auto_stays_on_cpus_when_no_node_type_has_a_gpu():
    plan = make_plan(experiment(), ClusterResources(cpus=8, gpus=0, autoscaler=CPU_AUTOSCALER))
    assert plan.eval_resources.gpu == 0 and not plan.pretrain_resources["P"].use_gpu
    assert "waiting" not in plan.describe() and not plan.unreachable
    # the CPU nodes still count: 8 + 4 x 16 = 72 CPUs / 2 per trial, capped by the 8 trials
    assert plan.eval_concurrency == 8


def test_auto_on_a_gpu_cluster_without_autoscaler_packs_trials_by_fraction():
    cluster = ClusterResources(cpus=16, gpus=1)
    plan = make_plan(experiment(), cluster)
    assert plan.eval_resources == TrialResources(cpu=2, gpu=0.25)
    assert plan.eval_concurrency == 4  # four fine-tunes share the one GPU
    assert "default: the cluster has 1 GPUs" in plan.describe()


# ------------------------------------------------------------------------- packing


def test_fractional_trials_pack_and_ddp_runs_take_whole_gpus():
    cluster = ClusterResources(cpus=64, gpus=4)
    assert max_concurrent_trials(TrialResources(1, 0.25), cluster) == 16
    two_rank = pretrain_resources(PretrainSpec(
        name="x", data=DatasetSpec(sources=({"kind": "digits"},)), num_workers=2,
        encoder=EncoderSpec(name="small_resnet"), use_gpu=True), cluster)
    assert two_rank.total_gpus == 2
    assert concurrent_pretrain_runs([two_rank] * 5, cluster) == 2


def test_an_unlimited_autoscaler_runs_every_trial_at_once():
    unlimited = AutoscalerView(source="test", node_types=(NodeType("g", 8, 1, math.inf),))
    cluster = ClusterResources(cpus=2, gpus=0, autoscaler=unlimited)
    assert math.isinf(cluster.max_gpus)
    assert max_concurrent_trials(TrialResources(1, 0.5), cluster, n_trials=40) == 40
    assert max_concurrent_trials(TrialResources(1, 0.5), cluster, cap=6, n_trials=40) == 6
    assert "unlimited" in cluster.describe()


# ------------------------------------------------------------------- the autoscaler's view


def test_the_shipped_cluster_file_can_reach_32_gpus():
    config = yaml.safe_load((LAUNCH / "cluster.yaml").read_text())
    view = view_from_launcher_config(config, "launch/cluster.yaml")
    assert view is not None
    gpu_types = [t for t in view.node_types if t.gpus > 0]
    assert gpu_types and all(t.max_count > 0 for t in gpu_types)
    expected = sum(t.gpus * t.max_count for t in gpu_types)
    assert view.capacity("GPU") == expected > 0


def test_launcher_config_counts_the_head_and_caps_workers_by_max_workers():
    config = {"max_workers": 3, "head_node_type": "head", "available_node_types": {
        "head": {"resources": {"CPU": 4}, "max_workers": 0},
        "big": {"resources": {"CPU": 16, "GPU": 8}, "max_workers": 2},
        "small": {"resources": {"CPU": 8, "GPU": 1}, "max_workers": 10}}}
    view = view_from_launcher_config(config, "x")
    # 3 worker nodes at most: both big ones (16 GPUs) and one small (1 GPU)
    assert view.capacity("GPU") == 17
    # CPUs: the head (4) + 2 x 16 + 1 x 8
    assert view.capacity("CPU") == 44
    assert view_from_launcher_config({"cluster_name": "x"}, "x") is None


def test_gcs_cluster_config_is_read_with_unlimited_groups_and_caps():
    config = autoscaler_pb2.ClusterConfig(
        node_group_configs=[
            autoscaler_pb2.NodeGroupConfig(name="head", resources={"CPU": 8}, max_count=1),
            autoscaler_pb2.NodeGroupConfig(name="gpu", resources={"CPU": 8, "GPU": 2},
                                           max_count=-1)],
        max_resources={"GPU": 6})
    view = view_from_cluster_config(config)
    assert [t.name for t in view.node_types] == ["head", "gpu"]
    assert math.isinf(view.node_types[1].max_count)
    assert view.capacity("GPU") == 6 and math.isinf(view.capacity("CPU"))
    assert view_from_cluster_config(autoscaler_pb2.ClusterConfig()) is None


def test_autoscaler_view_prefers_the_named_config_then_the_gcs_then_the_head_file(
        tmp_path: Path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv(resources.AUTOSCALER_CONFIG_ENV, raising=False)
    monkeypatch.setattr(resources, "gcs_cluster_config", lambda: None)
    assert autoscaler_view() is None
    assert ClusterResources.detect().autoscaler is None

    head_file = tmp_path / "ray_bootstrap_config.yaml"
    head_file.write_text((LAUNCH / "cluster.yaml").read_text())
    assert "ray_bootstrap_config.yaml" in autoscaler_view().source

    gcs = autoscaler_pb2.ClusterConfig(node_group_configs=[
        autoscaler_pb2.NodeGroupConfig(name="gcs-gpu", resources={"GPU": 1}, max_count=3)])
    monkeypatch.setattr(resources, "gcs_cluster_config", lambda: gcs)
    assert [t.name for t in autoscaler_view().node_types] == ["gcs-gpu"]

    named = tmp_path / "nodes.yaml"
    named.write_text(yaml.safe_dump({"available_node_types": {
        "a100": {"resources": {"CPU": 12, "GPU": 1}, "max_workers": 5}}}))
    monkeypatch.setenv(resources.AUTOSCALER_CONFIG_ENV, str(named))
    cluster = ClusterResources.detect()
    assert [t.name for t in cluster.autoscaler.node_types] == ["a100"]
    assert cluster.max_gpus == max(cluster.gpus, 5)

    named.write_text("cluster_name: nothing here\n")
    with pytest.raises(SpecError, match="names no node type"):
        autoscaler_view()
    monkeypatch.setenv(resources.AUTOSCALER_CONFIG_ENV, str(tmp_path / "missing.yaml"))
    with pytest.raises(EnvironmentProblem, match="missing.yaml': no such file; expected a "
                                                 "cluster-launcher YAML file"):
        autoscaler_view()


# -------------------------------------------------------------- the pre-training preflight


def test_pretrain_preflight_waits_for_autoscaled_gpus_and_refuses_impossible_ones(capsys):
    run = experiment(use_gpu=True).pretrain[0]
    preflight(run, True, ClusterResources(cpus=8, gpus=0, autoscaler=GPU_AUTOSCALER))
    assert "waiting for 1 GPUs" in capsys.readouterr().out
    assert pretrain_gpu_problem(run, ClusterResources(cpus=8, gpus=2)) is None
    for cluster in (ClusterResources(cpus=8, gpus=0),
                    ClusterResources(cpus=8, gpus=0, autoscaler=CPU_AUTOSCALER)):
        with pytest.raises(SpecError, match="pretrain P: training on GPUs needs 1 whole GPUs"):
            preflight(run, True, cluster)
    preflight(run, False, ClusterResources(cpus=8, gpus=0))  # CPUs: nothing to check


# ------------------------------------------------------------------ refused before running


@pytest.mark.ray
def test_gpus_the_cluster_can_never_have_are_refused_before_anything_is_written(
        ray_session, tmp_path: Path, monkeypatch):
    from raysweep import api
    from raysweep.errors import Problems

    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # no ~/ray_bootstrap_config.yaml
    monkeypatch.delenv(resources.AUTOSCALER_CONFIG_ENV, raising=False)
    monkeypatch.setenv("RAYSWEEP_CACHE", str(tmp_path / "cache"))
    assert ray_session.cluster_resources().get("GPU", 0) == 0
    data = {"name": "exp", "storage": str(tmp_path / "runs"),
            "pretrain": [{"name": "P", "data": DIGITS, "encoder": {"name": "small_resnet"},
                          "use_gpu": True}],
            "evaluate": {"data": DIGITS, "seeds": 1, "protocols": ["finetune"], "encoders": [
                {"name": "R", "encoder": {"name": "small_resnet"}}]},
            "resources": {"gpus_per_trial": 0.5}}
    with pytest.raises(Problems) as run_error:
        api.run(data)
    assert [line.split(" (")[0] for line in run_error.value.problems] == [
        "pretrain run P asks for 1 whole GPU(s)", "evaluation trials ask for 0.5 GPU each"]
    assert not (tmp_path / "runs").exists()
    with pytest.raises(Problems, match="pretrain run P asks for 1 whole GPU"):
        api.pretrain(data)
    assert not (tmp_path / "runs" / "exp" / "pretrain").exists()  # no run was started


# ------------------------------------------------------------------------ CPUs per trial


def _auto_cpu_spec(gpus_per_trial=None):
    spec = experiment(gpus_per_trial=gpus_per_trial)
    return spec.replace(resources=spec.resources.replace(cpus_per_trial=None))


def test_auto_cpus_follow_the_gpu_nodes_shape_so_every_gpu_fills():
    # 16 CPUs and 4 GPUs, 0.25 GPU a trial: 16 GPU slots, so 16 / 16 = 1 CPU each.
    plan = make_plan(_auto_cpu_spec(0.25), ClusterResources(cpus=16, gpus=4))
    assert plan.eval_resources == TrialResources(cpu=1, gpu=0.25)
    assert plan.eval_concurrency == 8  # capped by the 8 trials of the spec
    assert "1 CPU (auto: 4 CPUs per GPU x 0.25 GPU)" in plan.describe()
    # An explicit 4 CPUs a trial leaves three quarters of the GPUs idle: the spec is obeyed.
    four = experiment(gpus_per_trial=0.25)
    four = four.replace(resources=four.resources.replace(cpus_per_trial=4))
    assert max_concurrent_trials(make_plan(four, ClusterResources(16, 4)).eval_resources,
                                 ClusterResources(16, 4)) == 4
    # The shipped cluster file's GPU workers: 32 CPUs, 4 GPUs -> 8 per GPU, 2 per trial.
    plan = make_plan(_auto_cpu_spec(0.25),
                     ClusterResources(cpus=8, gpus=0, autoscaler=GPU_AUTOSCALER))
    assert plan.eval_resources.cpu == 2


@pytest.mark.parametrize(("cpus", "gpus", "share", "expected"), [
    (16, 4, 0.25, 1), (16, 4, 0.5, 2), (64, 8, 0.125, 1), (96, 8, 0.5, 6), (2, 4, 0.25, 1),
    (16, 0, 0.0, 1)])
def test_auto_cpus_per_trial_arithmetic(cpus, gpus, share, expected):
    slots_by_gpu = math.floor(gpus / share) if share else None
    trial = TrialResources(cpu=resources.auto_cpus_per_trial(share, ClusterResources(cpus, gpus)),
                           gpu=share)
    assert trial.cpu == expected
    if slots_by_gpu and cpus >= slots_by_gpu:
        # CPUs never run out before the GPUs are full.
        assert max_concurrent_trials(trial, ClusterResources(cpus, gpus)) == slots_by_gpu
