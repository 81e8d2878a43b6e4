"""``launch/kuberay/`` as written, checked without a cluster against the RayJob and RayCluster
fields of KubeRay's ``ray.io/v1`` API (``ray-operator/apis/ray/v1/rayjob_types.go`` and
``raycluster_types.go``: the fields a spec may have, and those without ``omitempty`` that it must
have), and against raysweep: the entrypoint runs a shipped spec that validates, its storage is
on the shared volume, the token comes from a Secret on every Ray process, the image is the Ray
version raysweep is tested with."""

from __future__ import annotations

import re
import shlex

import ray
import yaml
from launch_helpers import REPO

from raysweep.config import load_spec

KUBERAY = REPO / "launch" / "kuberay"
HOME = "/home/ray"   # the home of Ray's images' user

#: RayJobSpec's fields (ray.io/v1), all optional in the schema.
RAYJOB_FIELDS = {"activeDeadlineSeconds", "backoffLimit", "rayClusterSpec", "submitterPodTemplate",
                 "metadata", "clusterSelector", "submitterConfig", "managedBy", "deletionPolicy",
                 "entrypoint", "runtimeEnvYAML", "jobId", "submissionMode",
                 "entrypointResources", "entrypointNumCpus", "entrypointNumGpus",
                 "ttlSecondsAfterFinished", "shutdownAfterJobFinishes", "suspend"}
SUBMISSION_MODES = {"K8sJobMode", "HTTPMode", "InteractiveMode"}
#: RayClusterSpec's fields; ``headGroupSpec`` is required.
RAYCLUSTER_FIELDS = {"suspend", "managedBy", "autoscalerOptions", "headServiceAnnotations",
                     "enableInTreeAutoscaling", "gcsFaultToleranceOptions", "headGroupSpec",
                     "rayVersion", "workerGroupSpecs", "authOptions"}
HEAD_FIELDS = {"template", "headService", "enableIngress", "rayStartParams", "serviceType"}
HEAD_REQUIRED = {"template", "rayStartParams"}
WORKER_FIELDS = {"suspend", "groupName", "replicas", "minReplicas", "maxReplicas",
                 "idleTimeoutSeconds", "rayStartParams", "template", "scaleStrategy", "numOfHosts"}
WORKER_REQUIRED = {"groupName", "minReplicas", "maxReplicas", "rayStartParams", "template"}
SERVICE_TYPES = {"ClusterIP", "NodePort", "LoadBalancer"}
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def _documents() -> dict[str, dict]:
    docs = [doc for path in sorted(KUBERAY.glob("*.yaml"))
            for doc in yaml.safe_load_all(path.read_text()) if doc]
    return {doc["kind"]: doc for doc in docs}


def _rayjob() -> dict:
    return _documents()["RayJob"]


def _pod_specs(job: dict) -> dict[str, dict]:
    cluster = job["spec"]["rayClusterSpec"]
    pods = {"head": cluster["headGroupSpec"]["template"]["spec"],
            "submitter": job["spec"]["submitterPodTemplate"]["spec"]}
    pods.update({group["groupName"]: group["template"]["spec"]
                 for group in cluster["workerGroupSpecs"]})
    return pods


def test_the_rayjob_has_kuberays_fields_and_no_others():
    job = _rayjob()
    assert job["apiVersion"] == "ray.io/v1" and DNS_LABEL.match(job["metadata"]["name"])
    spec = job["spec"]
    assert set(spec) <= RAYJOB_FIELDS, set(spec) - RAYJOB_FIELDS
    assert spec["submissionMode"] in SUBMISSION_MODES
    # a cluster of its own (clusterSelector would run on an existing one, and KubeRay refuses
    # shutdownAfterJobFinishes with it), deleted when the job ends
    assert "clusterSelector" not in spec and spec["shutdownAfterJobFinishes"] is True
    assert isinstance(spec["ttlSecondsAfterFinished"], int) and spec["ttlSecondsAfterFinished"] >= 0
    cluster = spec["rayClusterSpec"]
    assert set(cluster) <= RAYCLUSTER_FIELDS and "headGroupSpec" in cluster
    head = cluster["headGroupSpec"]
    assert HEAD_REQUIRED <= set(head) <= HEAD_FIELDS and head["serviceType"] in SERVICE_TYPES
    groups = cluster["workerGroupSpecs"]
    assert len({group["groupName"] for group in groups}) == len(groups) >= 1
    for group in groups:
        assert WORKER_REQUIRED <= set(group) <= WORKER_FIELDS, group["groupName"]
        assert 0 <= group["minReplicas"] <= group.get("replicas", 0) <= group["maxReplicas"]
    for params in [head["rayStartParams"], *(group["rayStartParams"] for group in groups)]:
        # map[string]string: an unquoted number or boolean is refused by the API server
        assert all(isinstance(value, str) for value in params.values()), params


def test_head_runs_the_driver_only_and_a_group_of_gpu_workers():
    job = _rayjob()
    head = job["spec"]["rayClusterSpec"]["headGroupSpec"]
    assert head["rayStartParams"]["num-cpus"] == "0"
    pods = _pod_specs(job)
    gpu_groups = [name for name in pods if name not in ("head", "submitter")
                  and int(pods[name]["containers"][0]["resources"]["limits"]
                          .get("nvidia.com/gpu", 0)) >= 1]
    assert gpu_groups
    for name, pod in pods.items():
        container = pod["containers"][0]
        assert DNS_LABEL.match(container["name"]), name
        resources = container["resources"]
        assert resources["requests"] == resources["limits"], name   # what Ray sees is given
        assert {"cpu", "memory"} <= set(resources["limits"]), name


def test_the_image_is_the_ray_version_raysweep_is_tested_with():
    job = _rayjob()
    cluster = job["spec"]["rayClusterSpec"]
    assert cluster["rayVersion"] == ray.__version__
    images = {pod["containers"][0]["image"] for pod in _pod_specs(job).values()}
    assert len(images) == 1   # head, workers and submitter run the same raysweep
    base = re.search(r"^FROM rayproject/ray:(\S+)$", (KUBERAY / "Dockerfile").read_text(), re.M)
    assert base and base.group(1).startswith(f"{ray.__version__}-") and "gpu" in base.group(1)


def test_every_ray_process_authenticates_with_the_token_from_a_secret():
    job = _rayjob()
    for name, pod in _pod_specs(job).items():
        env = {var["name"]: var for var in pod["containers"][0]["env"]}
        assert env["RAY_AUTH_MODE"]["value"] == "token", name
        token = env["RAY_AUTH_TOKEN"]
        assert "value" not in token, name   # never written in the manifest
        assert token["valueFrom"]["secretKeyRef"] == {"name": "raysweep-ray-token",
                                                      "key": "token"}, name
    header = (KUBERAY / "rayjob.yaml").read_text()
    assert "kubectl create secret generic raysweep-ray-token" in header
    assert "runtimeEnvYAML" not in job["spec"]   # the job's runtime env is stored by Ray


def _mounts(pod: dict) -> dict[str, tuple[str, str]]:
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    mounts = {}
    for mount in pod["containers"][0]["volumeMounts"]:
        claim = volumes[mount["name"]].get("persistentVolumeClaim", {}).get("claimName")
        if claim:
            mounts[mount["mountPath"]] = (claim, mount.get("subPath", ""))
    return mounts


def test_the_entrypoints_spec_writes_to_the_shared_volume_on_every_node():
    documents = _documents()
    claim = documents["PersistentVolumeClaim"]
    assert "ReadWriteMany" in claim["spec"]["accessModes"]
    job = documents["RayJob"]
    pods = _pod_specs(job)
    mounts = {name: _mounts(pod) for name, pod in pods.items() if name != "submitter"}
    assert len({tuple(sorted(m.items())) for m in mounts.values()}) == 1   # the same everywhere
    shared = next(iter(mounts.values()))
    assert {c for c, _ in shared.values()} == {claim["metadata"]["name"]}
    args = shlex.split(job["spec"]["entrypoint"])
    assert args[:4] == ["python", "-m", "raysweep.cli", "run"] and len(args) == 5
    spec = load_spec(REPO / args[4])   # relative to the image's working directory, the checkout
    storage = re.sub(r"^~(?=/|$)", HOME, spec.storage)   # as the driver expands it, on the head
    assert any(storage == path or storage.startswith(path + "/") for path in shared), storage
    for wanted in (f"{HOME}/data", f"{HOME}/weights", f"{HOME}/.cache/torch"):
        assert wanted in shared, wanted
    workdir = re.search(r"^WORKDIR (\S+)$", (KUBERAY / "Dockerfile").read_text(), re.M)
    assert workdir and workdir.group(1) == f"{HOME}/raysweep"


def test_the_readme_section_names_the_files_that_exist():
    readme = (REPO / "launch" / "README.md").read_text()
    section = readme.split("## 4. Kubernetes (KubeRay)")[1].split("\n## ")[0]
    named = set(re.findall(r"launch/kuberay/[\w.]+", section))
    assert named == {"launch/kuberay/rayjob.yaml", "launch/kuberay/storage.yaml",
                     "launch/kuberay/Dockerfile"}
    assert all((REPO / name).is_file() for name in named)
    assert "kubectl create secret generic raysweep-ray-token" in section
