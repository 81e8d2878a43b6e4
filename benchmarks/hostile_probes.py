"""The probes of ``hostile_inputs.py``: the sandbox, a small finished experiment to tamper
with, and the three sets (``old``, ``new``, ``held-out``).

A probe builds its input in a :class:`Box` (a fresh sandbox: ``home/``, ``cache/``, ``runs/``
(the storage root), ``inputs/`` and ``outside/``, the files that no probe may read or write)
and returns the :class:`Call` to make. Expectations: ``refuse`` (exit 2, ``lines`` ``error:``
lines and nothing else on stderr, nothing written, ``text`` in the output), ``warn`` (exit 0
and a ``warning:`` line holding ``text``) or ``ok`` (exit 0, ``text`` in the output).
"""

from __future__ import annotations

import copy
import json
import os
import pickle
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

#: Planted credentials: none of them may ever be printed.
KEY = "AKIAHOSTILEKEY0001"
SECRET = "hostileS3cr3tVALUE"
TOKEN = "hostileT0kenVALUE"
SECRETS = (KEY, SECRET, TOKEN)
#: A store endpoint where nothing listens (connections are refused at once).
CLOSED = "endpoint_override=127.0.0.1:9&scheme=http"

DIGITS = {"sources": [{"kind": "digits"}], "image_size": 16}
TWO_DIGITS = {"sources": [{"kind": "digits", "classes": ["0", "1"]}], "image_size": 16}


@dataclass(frozen=True)
class Call:
    """What a probe runs: ``raysweep`` arguments (or an in-process API call), extra
    environment (None removes a variable) and a command wrapped around it (``unshare -n``)."""

    argv: list[str] = field(default_factory=list)
    env: dict[str, str | None] = field(default_factory=dict)
    wrap: list[str] = field(default_factory=list)
    api: Callable[[], Any] | None = None


@dataclass(frozen=True)
class Probe:
    set: str
    id: str
    kind: str
    build: Callable[[Box], Call]
    expect: str = "refuse"  # refuse | warn | ok
    text: str | tuple[str, ...] = ""  # every one must be printed (in the warning line)
    absent: tuple[str, ...] = ()  # none of these may be printed
    lines: int = 1
    may_write: bool = False
    timeout: float = 120.0
    max_seconds: float | None = None
    slow: bool = False  # starts Ray
    root: bool = False  # needs unshare (root)
    check: Callable[[Box], str] | None = None  # a further check after the run ('' = fine)

    @property
    def texts(self) -> tuple[str, ...]:
        return (self.text,) if isinstance(self.text, str) else self.text


# ------------------------------------------------------------------------------- the box


def _png(path: Path, seed: int = 0, size: int = 12) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, size=(size, size, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)


class Box:
    """A probe's sandbox (see the module docstring); ``shared`` holds the template
    experiment built once by :func:`prepare`."""

    def __init__(self, root: Path, shared: Path):
        self.root, self.shared = root, shared
        self.home, self.cache, self.runs = root / "home", root / "cache", root / "runs"
        self.inputs, self.outside, self.cwd = root / "inputs", root / "outside", root
        self.home.mkdir()
        self.inputs.mkdir()
        self.outside.mkdir()
        (self.outside / "passwd").write_text("root:x:0:0:OUTSIDE-CANARY:/root:/bin/sh\n")
        (self.outside / "planted").mkdir()
        for cls in ("a", "b"):
            for i in range(3):
                _png(self.outside / "images" / cls / f"{i}.png", seed=i)

    # -- inputs --------------------------------------------------------------------------

    def base(self) -> dict[str, Any]:
        """A spec that validates and could run (as ``tests/test_bad_inputs.py``'s)."""
        return copy.deepcopy({
            "name": "exp", "storage": str(self.runs),
            "pretrain": [{"name": "bt", "data": DIGITS, "encoder": {"name": "small_resnet"},
                          "batch_size": 32, "projector": [32, 32], "epochs": 1,
                          "allow_test_overlap": True}],
            "evaluate": {"data": DIGITS, "seeds": 2, "encoders": [
                {"name": "bt", "encoder": {"name": "small_resnet", "weights": "pretrain:bt"}}]}})

    def changed(self, *changes: tuple[str, Any], data: dict[str, Any] | None = None
                ) -> dict[str, Any]:
        """``base()`` (or ``data``) with dotted-path changes (list items by index)."""
        data = self.base() if data is None else data
        for dotted, value in changes:
            *parents, last = dotted.split(".")
            target: Any = data
            for part in parents:
                target = target[int(part)] if isinstance(target, list) else target[part]
            if isinstance(target, list):
                target[int(last)] = value
            else:
                target[last] = value
        return data

    def spec(self, data: Any, name: str = "spec.yaml") -> str:
        path = self.inputs / name
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        return str(path)

    def file(self, name: str, content: str | bytes) -> Path:
        path = self.inputs / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
        return path

    def folder(self, name: str, counts: dict[str, int]) -> Path:
        root = self.inputs / name
        for cls, count in counts.items():
            for i in range(count):
                _png(root / cls / f"{i}.png", seed=i)
        root.mkdir(parents=True, exist_ok=True)
        return root

    def link(self, path: Path, target: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()
        path.symlink_to(target)
        return path

    # -- the finished experiment -----------------------------------------------------------

    def study(self) -> Path:
        """A copy of the template experiment in ``runs/study``."""
        target = self.runs / "study"
        shutil.copytree(self.shared / "template" / "study", target, symlinks=True)
        return target

    def study_spec(self, **changes: Any) -> str:
        """The template's spec pointed at this box's storage (``inputs/study.yaml``)."""
        data = study_data(self.runs)
        data.update(changes)
        return self.spec(data, "study.yaml")

    def row_files(self) -> list[Path]:
        return sorted((self.runs / "study" / "rows").rglob("seed-*.json"))

    # -- display ---------------------------------------------------------------------------

    def hide(self, text: str) -> str:
        return text.replace(str(self.root), "<box>")

    def show(self, call: Call) -> str:
        if call.api is not None:
            return "(API call)"
        env = [f"{k}={v}" for k, v in call.env.items() if v is not None]
        return self.hide(" ".join([*env, *call.wrap, "raysweep", *map(_quote, call.argv)]))


def _quote(arg: str) -> str:
    return json.dumps(arg) if any(c in arg for c in " &?;") else arg


# -------------------------------------------------------------------------- the template


def study_data(storage: Path) -> dict[str, Any]:
    """A small study: pre-training run A (finished), conditions A and rnd (linear probe, 3
    seeds, every row stored), and search s (three complete trials)."""
    run = {"data": TWO_DIGITS, "encoder": {"name": "small_resnet"}, "batch_size": 16,
           "projector": [32, 32], "epochs": 1, "allow_test_overlap": True}
    return {
        "name": "study", "storage": str(storage),
        "pretrain": [{**run, "name": "A"}],
        "evaluate": {"data": TWO_DIGITS, "seeds": 3, "protocols": ["probe"], "encoders": [
            {"name": "A", "encoder": {"name": "small_resnet", "weights": "pretrain:A"}},
            {"name": "rnd", "encoder": {"name": "small_resnet", "weights": "random"}}]},
        "search": [{"name": "s", "pretrain": {**run, "name": "base"},
                    "evaluate": {"data": TWO_DIGITS, "seeds": 2}, "num_samples": 3,
                    "space": {"pretrain.lr_max": {"type": "loguniform", "low": 1e-4,
                                                  "high": 1e-2}}}]}


def prepare(shared: Path) -> None:
    """Build ``shared/template/study`` (every file a finished run of :func:`study_data`
    leaves that the probes tamper with) and the shared matplotlib cache."""
    import optuna
    import torch

    from raysweep.config import dump_spec, spec_from_data
    from raysweep.models import build_encoder
    from raysweep.plan.gpu_memory import MemoryMeasurement, TrialKind, write_measurement
    from raysweep.plan.identity import identify_trials, planned_refs
    from raysweep.plan.run_identity import pretrain_run_dir
    from raysweep.search.outputs import write_outputs
    from raysweep.search.study import open_storage, study_name
    from raysweep.stages.evaluate import condition_labels
    from raysweep.storage.atomic import atomic_write_json
    from raysweep.storage.provenance import provenance
    from raysweep.store.results import ResultsStore
    from raysweep.store.run_dirs import ENCODER_FILE, META_FILE, METRICS_FILE
    from raysweep.store.searches import search_directory

    (shared / "matplotlib").mkdir(parents=True)
    os.environ["RAYSWEEP_CACHE"] = str(shared / "cache")
    spec = spec_from_data(study_data(shared / "template"))
    spec.directory.mkdir(parents=True)
    (spec.directory / "experiment.yaml").write_text(dump_spec(spec))
    atomic_write_json(spec.directory / "provenance.json", provenance(spec))
    run_dir = pretrain_run_dir(spec, spec.pretrain[0], save_digests=False)
    run_dir.mkdir(parents=True)
    torch.save(build_encoder("small_resnet").state_dict(), run_dir / ENCODER_FILE)
    (run_dir / METRICS_FILE).write_text('{"epoch": 0, "loss": 1.5}\n')
    (run_dir / META_FILE).write_text(json.dumps({"status": "finished", "epochs_trained": 1,
                                                 "name": "A"}))
    store = ResultsStore(spec.directory)
    refs = planned_refs(identify_trials(spec, save_digests=False))
    rng = np.random.default_rng(0)
    for ref in refs:
        base = 0.9 if ref.key.condition == "A" else 0.6
        store.write({"condition": ref.key.condition, "protocol": ref.key.protocol,
                     "seed": ref.key.seed, "row_id": ref.row_id,
                     **{m: float(base + rng.normal(0, 0.02)) for m in (
                         "accuracy", "f1_weighted", "f1_macro", "balanced_accuracy")}})
    store.consolidate(refs, condition_labels(spec))
    write_measurement(spec.directory, TrialKind("small_resnet", "probe", 64),
                      MemoryMeasurement(2**30, 80 * 2**30, "NVIDIA H100"))
    search = spec.search[0]
    folder = search_directory(spec, search)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(storage=open_storage(folder / "study.journal"),
                                study_name=study_name(search), direction="maximize")
    distribution = optuna.distributions.FloatDistribution(1e-4, 1e-2, log=True)
    for number, lr in enumerate((1e-3, 3e-3, 5e-4)):
        values = [0.7 + 0.01 * number, 0.72 + 0.01 * number]
        study.add_trial(optuna.trial.create_trial(
            params={"pretrain.lr_max": lr}, distributions={"pretrain.lr_max": distribution},
            value=float(np.mean(values)),
            user_attrs={"seeds": [0, 1], "values_per_seed": values}))
    write_outputs(folder, study, search)


# ------------------------------------------------------------------------------ builders


COMMANDS = {"validate": ["validate"], "dry": ["run", "--dry-run"], "run": ["run"],
            "pretrain": ["pretrain"], "evaluate": ["evaluate"], "search": ["search"],
            "estimate": ["run", "--estimate"], "spec-only": ["validate", "--spec-only"]}


def on_spec(command: str, data: Callable[[Box], Any], **env: str | None
            ) -> Callable[[Box], Call]:
    """A probe running ``raysweep <command> SPEC`` on the spec ``data(box)`` builds."""
    def build(box: Box) -> Call:
        head, *flags = COMMANDS[command]
        return Call([head, box.spec(data(box)), *flags], env=dict(env))
    return build


def on_study(command: str, tamper: Callable[[Box, Path], Any], **env: str | None
             ) -> Callable[[Box], Call]:
    """A probe tampering with a copy of the template experiment, then running ``raysweep
    status|report DIR`` or ``raysweep <command> study.yaml``."""
    def build(box: Box) -> Call:
        directory = box.study()
        tamper(box, directory)
        if command in ("status", "report"):
            return Call([command, str(directory)], env=dict(env))
        head, *flags = COMMANDS[command]
        return Call([head, box.study_spec(), *flags], env=dict(env))
    return build


def storage_spec(uri: str) -> Callable[[Box], Any]:
    return lambda box: box.changed(("storage", uri))


def _outside_of(path: Path) -> Path:
    """The ``outside/`` folder of the box ``path`` is in."""
    return next(parent / "outside" for parent in path.parents if (parent / "outside").is_dir())


def lock(content: bytes | str | dict[str, Any]) -> Callable[[Box, Path], Any]:
    def tamper(box: Box, directory: Path) -> None:
        path = directory / ".raysweep.lock"
        if isinstance(content, dict):
            path.write_text(json.dumps(content))
        elif isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
    return tamper


def holder(**fields: Any) -> dict[str, Any]:
    record = {"host": os.uname().nodename, "pid": os.getpid(), "since": "2026-01-01 00:00:00",
              "command": "raysweep run study.yaml", "token": "f" * 32}
    record.update(fields)
    return record


def replacing(locate: Callable[[Box, Path], Path],
              write: Callable[[Path], Any]) -> Callable[[Box, Path], Any]:
    """A tamper that replaces the file ``locate(box, directory)`` of the study's experiment
    directory by what ``write(path)`` puts there."""
    def tamper(box: Box, directory: Path) -> None:
        path = locate(box, directory)
        path.unlink()
        write(path)
    return tamper


def first_row(write: Callable[[Path], Any]) -> Callable[[Box, Path], Any]:
    """Replace the first stored row file by what ``write(path)`` puts there."""
    return replacing(lambda box, directory: box.row_files()[0], write)


def search_file(name: str, write: Callable[[Path], Any]) -> Callable[[Box, Path], Any]:
    """Replace the file ``name`` of the study's search ``s`` by what ``write(path)`` puts there."""
    return replacing(lambda box, directory: directory / "search" / "s" / name, write)


def journal(write: Callable[[Path], Any]) -> Callable[[Box, Path], Any]:
    return search_file("study.journal", write)


def meta(write: Callable[[Path], Any]) -> Callable[[Box, Path], Any]:
    """Replace the ``meta.json`` of pre-training run ``A`` by what ``write(path)`` puts there."""
    return replacing(lambda box, directory: next(
        (directory / "pretrain").glob("A-*/meta.json")), write)


def gpu_file(content: Any) -> Callable[[Box, Path], Any]:
    def tamper(box: Box, directory: Path) -> None:
        path = directory / "gpu_memory" / "small_resnet-probe-b64.json"
        path.write_bytes(content if isinstance(content, bytes) else
                         (content if isinstance(content, str) else json.dumps(content)).encode())
    return tamper


def measurement(**fields: Any) -> dict[str, Any]:
    record = {"encoder": "small_resnet", "protocol": "probe", "batch_size": 64,
              "peak_bytes": 2**30, "device_bytes": 80 * 2**30, "device_name": "NVIDIA H100"}
    record.update(fields)
    return record


def autoscaler(content: str | bytes, command: str = "dry") -> Callable[[Box], Call]:
    def build(box: Box) -> Call:
        path = box.file("cluster.yaml", content)
        head, *flags = COMMANDS[command]
        return Call([head, box.spec(box.base()), *flags],
                    env={"RAYSWEEP_AUTOSCALER_CONFIG": str(path)})
    return build


def cluster_yaml(cpus: Any = 8, gpus: Any = 1, max_workers: Any = 2, top: Any = 4) -> str:
    return yaml.safe_dump({"cluster_name": "c", "max_workers": top,
                           "head_node_type": "head", "available_node_types": {
                               "head": {"resources": {"CPU": 4}, "max_workers": 0},
                               "gpu": {"resources": {"CPU": cpus, "GPU": gpus},
                                       "max_workers": max_workers}}})


def garbage(size: int = 256) -> bytes:
    return np.random.default_rng(size).integers(0, 256, size=size, dtype=np.uint8).tobytes()


def a_pickle(marker: str = "pwned") -> bytes:
    return pickle.dumps({"row_id": "x", "marker": marker})


def search_spec(box: Box, **changes: Any) -> dict[str, Any]:
    data = box.base()
    search = {"name": "s", "pretrain": data["pretrain"][0], "evaluate": {"data": DIGITS},
              "space": {"pretrain.lr_max": {"type": "loguniform", "low": 1e-4, "high": 1e-2}}}
    search.update(changes)
    data["search"] = [search]
    return data


def probe(set_: str, kind: str) -> Callable[..., Probe]:
    def make(id: str, build: Callable[[Box], Call], **options: Any) -> Probe:
        return Probe(set_, id, kind, build, **options)
    return make




# ------------------------------------------------------------------------- the old round


def _old_cases() -> list[Probe]:
    """The cases of ``tests/test_bad_inputs.py``, as probes."""
    sys_path = str(Path(__file__).resolve().parents[1])
    import sys

    if sys_path not in sys.path:
        sys.path.insert(0, sys_path)
    from tests.test_bad_inputs import CASES

    def build(case: Any) -> Callable[[Box], Call]:
        def make(box: Box) -> Call:
            action = case.build(box.root)
            return Call(api=action) if callable(action) else Call(list(action))
        return make

    return [Probe("old", case.id, case.cls, build(case), text=case.expect, lines=case.lines)
            for case in CASES]


def _manifest(box: Box, rows: list[str], name: str = "m", header: str = "path,label,split",
              encoding: str = "utf-8", images: tuple[str, ...] = ("a.png", "b.png")) -> str:
    folder = box.inputs / name
    for index, image in enumerate(images):
        _png(folder / image, seed=index)
    (folder / "manifest.csv").write_bytes("\n".join([header, *rows, ""]).encode(encoding))
    return str(folder / "manifest.csv")


def _source(kind: str, path: Any, **extra: Any) -> dict[str, Any]:
    return {"sources": [{"kind": kind, "path": str(path), **extra}], "image_size": 16}


def _npz(box: Box, name: str, **arrays: Any) -> Path:
    path = box.inputs / name
    np.savez(path, **arrays)
    return path


def _medmnist_arrays(images_dtype: Any = "uint8", labels: Any = None) -> dict[str, Any]:
    arrays = {}
    for split in ("train", "val", "test"):
        arrays[f"{split}_images"] = np.zeros((4, 8, 8), dtype=images_dtype)
        arrays[f"{split}_labels"] = (np.array([[0], [1], [0], [1]]) if labels is None
                                     else labels)
    return arrays


def _eval_data(data: Callable[[Box], dict[str, Any]], command: str = "validate"
               ) -> Callable[[Box], Call]:
    return on_spec(command, lambda box: box.changed(("evaluate.data", data(box))))


def _preview(source: Callable[[Box], str], *extra: str) -> Callable[[Box], Call]:
    def build(box: Box) -> Call:
        return Call(["augment", "preview", "--pipeline", "barlow_twins", "--source",
                     source(box), "--out", str(box.inputs / "views.png"), "--image-size",
                     "16", "-n", "2", *extra])
    return build


def _damaged_cache(box: Box) -> Call:
    """A decode-cache entry with flipped bytes (the next load rebuilds it after a warning)."""
    import subprocess
    import sys

    folder = box.folder("imgs", {"a": 3, "b": 3})
    env = {**os.environ, "RAYSWEEP_CACHE": str(box.cache), "HOME": str(box.home)}
    subprocess.run([sys.executable, "-m", "raysweep.cli", "augment", "preview", "--pipeline",
                    "barlow_twins", "--source", str(folder), "--out", str(box.inputs / "v.png"),
                    "--image-size", "16", "-n", "2"], env=env, check=True, capture_output=True)
    entry = next(box.cache.rglob("images.u8"))
    data = bytearray(entry.read_bytes())
    data[len(data) // 2] ^= 0xFF
    entry.write_bytes(bytes(data))
    return Call(["augment", "preview", "--pipeline", "barlow_twins", "--source", str(folder),
                 "--out", str(box.inputs / "v.png"), "--image-size", "16", "-n", "2"])


def _old_kinds() -> list[Probe]:
    """The first round's other kinds (issue list of that round, tests/data/*), as probes."""
    old = probe("old", "data")
    spec = probe("old", "spec")
    report = probe("old", "report")
    cli = probe("old", "CLI argument")
    weights = probe("old", "weights")
    return [
        old("manifest-latin1", _eval_data(lambda b: _source("manifest", _manifest(
            b, ["a.png,caf\xe9,train", "b.png,b,test"], encoding="latin-1"))),
            text="not UTF-8 text"),
        old("manifest-binary", _eval_data(lambda b: _source("manifest", b.file(
            "m.csv", b"path,label\x00\x01\x02"))), text="NUL byte"),
        old("manifest-dotdot", _eval_data(lambda b: _source("manifest", _manifest(
            b, ["../x.png,a,train", "b.png,b,test"]))), text="is outside"),
        old("manifest-absolute", _eval_data(lambda b: _source("manifest", _manifest(
            b, [f"{b.outside / 'images/a/0.png'},a,train", "b.png,b,test"]))),
            text="is outside"),
        old("manifest-no-label-column", _eval_data(lambda b: _source("manifest", _manifest(
            b, ["a.png,train"], header="path,split"))), text="column 'label' is missing"),
        old("manifest-bad-split", _eval_data(lambda b: _source("manifest", _manifest(
            b, ["a.png,a,training", "b.png,b,test"]))), text="is not train, val or test"),
        old("manifest-missing-image", _eval_data(lambda b: _source("manifest", _manifest(
            b, ["a.png,a,train", "gone.png,b,test"]))), text="image not found"),
        old("manifest-empty-label", _eval_data(lambda b: _source("manifest", _manifest(
            b, ["a.png,,train", "b.png,b,test"]))), text="empty label"),
        old("manifest-class-filter", _eval_data(lambda b: _source("manifest", _manifest(
            b, ["a.png,a,train", "b.png,c,test"]), classes=["a", "b"])),
            text="label 'c' is not in classes"),
        old("npz-object", _eval_data(lambda b: _source("medmnist", _npz(
            b, "o.npz", **{**_medmnist_arrays(), "train_images": np.array(
                [{"a": 1}] * 4, dtype=object)}))), text="dtype object"),
        old("npz-float", _eval_data(lambda b: _source("medmnist", _npz(
            b, "f.npz", **_medmnist_arrays(images_dtype="float32")))), text="must be uint8"),
        old("npz-missing-array", _eval_data(lambda b: _source("medmnist", _npz(
            b, "m.npz", train_images=np.zeros((2, 8, 8), "uint8")))),
            text="missing array"),
        old("npz-multilabel", _eval_data(lambda b: _source("medmnist", _npz(
            b, "ml.npz", **_medmnist_arrays(labels=np.zeros((4, 3), "int64"))))),
            text="multi-label"),
        old("npz-single-array", _eval_data(lambda b: _source("medmnist", _npz(
            b, "one.npz", x=np.zeros(3)))), text="missing array"),
        old("folder-loose-image", _eval_data(lambda b: _source("folder", _loose_folder(b))),
            text="image outside a class sub-folder"),
        old("folder-empty", _eval_data(lambda b: _source("folder", b.folder("empty", {}))),
            text="empty source"),
        old("preview-corrupt-image", _preview(lambda b: str(_corrupt_folder(b))),
            text="bad.png"),
        old("cache-damaged-entry", _damaged_cache, expect="warn", text="damaged",
            may_write=True),
        old("preview-unknown-source", _preview(lambda b: str(b.inputs / "nothing.txt")),
            text="cannot read"),
        weights("weights-directory", on_spec("evaluate", lambda b: b.changed((
            "evaluate.encoders.0.encoder.weights", f"file:{b.inputs}"))), text="inputs"),
        weights("weights-truncated", on_spec("validate", lambda b: b.changed((
            "evaluate.encoders.0.encoder.weights", f"file:{_truncated_weights(b)}"))),
            text="t.pt"),
        weights("weights-tensor", on_spec("validate", lambda b: b.changed((
            "evaluate.encoders.0.encoder.weights", f"file:{_tensor_weights(b)}"))),
            text="tensor.pt"),
        spec("spec-empty-file", lambda b: Call(["validate", str(b.file("e.yaml", ""))]),
             text="e.yaml"),
        spec("spec-null-top", lambda b: Call(["validate", str(b.file("n.yaml", "null\n"))]),
             text="the top level must be a mapping"),
        spec("seeds-int-huge", on_spec("validate", lambda b: b.changed(("evaluate.seeds",
                                                                       10**30))),
             text="evaluate.seeds: must be in [1, 10000]"),
        spec("name-path", on_spec("validate", lambda b: b.changed(("name", "../evil"))),
             text="name: must be a name"),
        spec("unknown-protocol", on_spec("validate", lambda b: b.changed((
            "evaluate.protocols", ["finetune", "knn"]))), text="evaluate.protocols[1]"),
        spec("unknown-encoder", on_spec("validate", lambda b: b.changed((
            "pretrain.0.encoder.name", "resnet5"))), text="pretrain[0].encoder.name"),
        spec("batch-zero", on_spec("validate", lambda b: b.changed(("pretrain.0.batch_size",
                                                                   0))),
             text="pretrain[0].batch_size"),
        spec("epochs-negative", on_spec("validate", lambda b: b.changed(("pretrain.0.epochs",
                                                                        -1))),
             text="pretrain[0].epochs"),
        spec("labels-twice", on_spec("validate", lambda b: b.changed(("evaluate.data", {
            **DIGITS, "label_fraction": 0.5, "label_count": 100}))), text="evaluate.data"),
        spec("storage-empty", on_spec("validate", lambda b: b.changed(("storage", ""))),
             text="storage"),
        report("stats-word-mean", lambda b: Call(["report", "--from-stats", str(b.file(
            "s.csv", "model,mean,std,n\nA,high,0.1,35\nB,0.6,0.1,35\n"))]),
            text="must be numbers"),
        report("stats-no-std", lambda b: Call(["report", "--from-stats", str(b.file(
            "s.csv", "model,mean,n\nA,0.7,35\nB,0.6,35\n"))]), text="has no column(s)"),
        report("stats-comparison-unknown", lambda b: Call([
            "report", "--from-stats", str(b.file("s.csv", "model,mean,std,n\nA,0.7,0.1,35\n"
                                                 "B,0.6,0.1,35\n")),
            "--comparisons", str(b.file("c.csv", "model_1,model_2\nA,C\n"))]), text="C"),
        report("report-out-proc", lambda b: Call(["report", str(b.study()),
                                                  "--out", "/proc/raysweep-report"]),
               text="/proc/raysweep-report"),
        cli("convert-no-images", lambda b: Call([
            "datasets", "convert-isic", str(b.file("gt.csv", "image,MEL,NV\nx,1,0\n")),
            "--images", str(b.inputs / "none"), "--out", str(b.inputs / "m.csv")]),
            text="none"),
        cli("convert-bad-seed", lambda b: Call([
            "datasets", "convert-isic", str(b.file("gt.csv", "image,MEL,NV\nx,1,0\n")),
            "--images", str(b.inputs), "--out", str(b.inputs / "m.csv"), "--seed", "-3"]),
            text="--seed"),
        cli("describe-missing", lambda b: Call(["datasets", "describe",
                                                str(b.inputs / "nothing")]), text="nothing"),
        cli("preview-out-proc", _preview(lambda b: "digits", "--out", "/proc/raysweep.png"),
            text="--out /proc"),
        cli("status-missing", lambda b: Call(["status", str(b.runs / "nowhere")]),
            text="no such experiment directory"),
    ]


def _loose_folder(box: Box) -> Path:
    """A labelled image folder with an image beside its class sub-folders."""
    root = box.folder("loose", {"a": 2, "b": 2})
    _png(root / "x.png")
    return root


def _corrupt_folder(box: Box) -> Path:
    """An image folder holding one file that is no decodable PNG."""
    root = box.folder("corrupt", {"a": 2, "b": 2})
    (root / "a" / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    return root


def _truncated_weights(box: Box) -> Path:
    import torch

    from raysweep.models import build_encoder

    path = box.inputs / "t.pt"
    torch.save(build_encoder("small_resnet").state_dict(), path)
    path.write_bytes(path.read_bytes()[:5000])
    return path


def _tensor_weights(box: Box) -> Path:
    import torch

    path = box.inputs / "tensor.pt"
    torch.save(torch.zeros(3), path)
    return path


def old_round() -> list[Probe]:
    return _old_cases() + _old_kinds()


# ------------------------------------------------------------------------- the new round


def uri(form: str, scheme: str = "s3") -> str:
    """A storage URI holding planted credentials in one of several places."""
    closed = CLOSED
    forms = {
        "userinfo": f"{scheme}://{KEY}:{SECRET}@bucket/runs?{closed}",
        "aws-secret": f"{scheme}://bucket/runs?aws_secret_access_key={SECRET}&{closed}",
        "key-pair": f"{scheme}://bucket/runs?access_key={KEY}&secret_key={SECRET}&{closed}",
        "session": f"{scheme}://bucket/runs?session_token={TOKEN}&{closed}",
        "presigned": f"{scheme}://bucket/runs?X-Amz-Credential={KEY}&X-Amz-Signature={SECRET}"
                     f"&{closed}",
        "password": f"{scheme}://bucket/runs?password={SECRET}&{closed}",
        "token": f"{scheme}://bucket/runs?token={TOKEN}&{closed}",
    }
    return forms[form]


def _study_uri(form: str, scheme: str = "s3") -> str:
    base, _, query = uri(form, scheme).partition("?")
    return f"{base}/study?{query}"


def _secrets() -> list[Probe]:
    new = probe("new", "secret")
    probes = [new(f"secret-userinfo-{command}", on_spec(command, storage_spec(uri("userinfo"))),
                  text="***", max_seconds=60)
              for command in ("validate", "dry", "run", "pretrain", "evaluate", "search",
                              "estimate")]
    probes += [
        new("secret-userinfo-spec-only", on_spec("spec-only", storage_spec(uri("userinfo"))),
            expect="ok", text="ok: "),
        new("secret-userinfo-status", lambda b: Call(["status", _study_uri("userinfo")]),
            text="***", max_seconds=60),
        new("secret-userinfo-report", lambda b: Call(["report", _study_uri("userinfo")]),
            text="***", max_seconds=60),
        new("secret-gs-userinfo-validate", on_spec("validate", storage_spec(
            uri("userinfo", "gs"))), text="***", max_seconds=60),
    ]
    for form in ("aws-secret", "key-pair", "session", "presigned", "password", "token"):
        probes.append(new(f"secret-{form}-validate", on_spec("validate", storage_spec(uri(form))),
                          text="***", max_seconds=60))
        probes.append(new(f"secret-{form}-status", lambda b, f=form: Call(
            ["status", _study_uri(f)]), text="***", max_seconds=60))
    probes += [
        new("secret-aws-secret-run", on_spec("run", storage_spec(uri("aws-secret"))),
            text="***", max_seconds=60),
        new("secret-aws-secret-report", lambda b: Call(["report", _study_uri("aws-secret")]),
            text="***", max_seconds=60),
        new("secret-in-cache-variable", on_spec("validate", lambda b: b.base(),
                                                RAYSWEEP_CACHE=uri("userinfo")),
            text="RAYSWEEP_CACHE"),
        new("secret-in-manifest-path", on_spec("validate", lambda b: b.changed((
            "evaluate.data", _source("manifest", f"s3://{KEY}:{SECRET}@bucket/m.csv"))))),
        new("secret-in-weights-path", on_spec("validate", lambda b: b.changed((
            "evaluate.encoders.0.encoder.weights", f"file:s3://{KEY}:{SECRET}@bucket/w.pt")))),
    ]
    return probes


def _lock_probes() -> list[Probe]:
    new = probe("new", "tampered file")
    lock_text = (".raysweep.lock",)
    return [
        new("lock-bytes-status", on_study("status", lock(garbage())), expect="warn",
            text=lock_text),
        new("lock-bytes-run", on_study("run", lock(garbage())), text=lock_text),
        new("lock-pid-huge-status", on_study("status", lock(holder(pid=2**70))), expect="warn",
            text=lock_text),
        new("lock-pid-huge-run", on_study("dry", lock(holder(pid=2**70))), expect="ok"),
        new("lock-directory-status", on_study("status", lambda b, d: (
            d / ".raysweep.lock").mkdir()), expect="warn", text=lock_text),
        new("lock-directory-run", on_study("run", lambda b, d: (d / ".raysweep.lock").mkdir()),
            text=lock_text),
        new("lock-pid-negative-status", on_study("status", lock(holder(pid=-1))),
            expect="warn", text=lock_text, absent=("running: ? pid -1", "running: pid -1")),
        new("lock-list-status", on_study("status", lock("[1, 2, 3]")), expect="warn",
            text=lock_text),
        new("lock-pid-word-status", on_study("status", lock(holder(pid="many"))),
            expect="warn", text=lock_text),
        new("lock-symlink-status", on_study("status", lambda b, d: b.link(
            d / ".raysweep.lock", b.outside / "passwd")), expect="warn", text=lock_text),
        new("lock-symlink-run", on_study("run", lambda b, d: b.link(
            d / ".raysweep.lock", b.outside / "passwd")), text=lock_text),
    ]


def _row_probes() -> list[Probe]:
    new = probe("new", "tampered file")
    named = ("seed-0000-", "counted as missing")
    return [
        new("row-garbage-status", on_study("status", first_row(lambda p: p.write_bytes(
            garbage()))), expect="warn", text=named),
        new("row-list-status", on_study("status", first_row(lambda p: p.write_text("[1, 2]"))),
            expect="warn", text=named),
        new("row-types-status", on_study("status", first_row(lambda p: p.write_text(json.dumps(
            {"condition": 3, "protocol": None, "seed": "zero", "row_id": p.stem[10:]})))),
            expect="warn", text=named),
        new("row-pickle-status", on_study("status", first_row(lambda p: p.write_bytes(
            a_pickle()))), expect="warn", text=named),
        new("row-symlink-status", on_study("status", first_row(lambda p: p.symlink_to(
            _outside_of(p) / "passwd"))), expect="warn", text=named),
        new("row-directory-status", on_study("status", first_row(lambda p: p.mkdir())),
            expect="warn", text=named),
        new("row-wrong-id-status", on_study("status", first_row(lambda p: p.write_text(
            json.dumps({"condition": "A", "protocol": "probe", "seed": 0,
                        "row_id": "0" * 12})))), expect="warn", text=named),
        new("row-garbage-dry-run", on_study("dry", first_row(lambda p: p.write_bytes(
            garbage()))), expect="warn", text=named),
    ]


def _meta_and_results_probes() -> list[Probe]:
    new = probe("new", "tampered file")

    def results(write: Callable[[Path], Any]) -> Callable[[Box, Path], Any]:
        return replacing(lambda box, directory: directory / "results.parquet", write)

    return [
        new("meta-garbage-status", on_study("status", meta(lambda p: p.write_bytes(garbage()))),
            expect="warn", text=("meta.json",)),
        new("meta-list-status", on_study("status", meta(lambda p: p.write_text("[]"))),
            expect="warn", text=("meta.json",)),
        new("meta-symlink-status", on_study("status", meta(lambda p: p.symlink_to(
            _outside_of(p) / "passwd"))), expect="warn", text=("meta.json",)),
        new("results-garbage-status", on_study("status", results(lambda p: p.write_bytes(
            garbage()))), expect="warn", text=("results.parquet",)),
        new("results-garbage-report", on_study("report", results(lambda p: p.write_bytes(
            garbage()))), text="results.parquet"),
        new("results-symlink-status", on_study("status", results(lambda p: p.symlink_to(
            _outside_of(p) / "passwd"))), expect="warn", text=("results.parquet",)),
        new("results-symlink-report", on_study("report", results(lambda p: p.symlink_to(
            _outside_of(p) / "passwd"))), text="results.parquet"),
        new("results-directory-status", on_study("status", results(lambda p: p.mkdir())),
            expect="warn", text=("results.parquet",)),
        new("experiment-yaml-binary-status", on_study("status", lambda b, d: (
            d / "experiment.yaml").write_bytes(garbage())), text="experiment.yaml"),
        new("experiment-yaml-binary-report", on_study("report", lambda b, d: (
            d / "experiment.yaml").write_bytes(garbage())), text="experiment.yaml"),
        new("experiment-yaml-symlink-status", on_study("status", lambda b, d: b.link(
            d / "experiment.yaml", b.outside / "passwd")), text="experiment.yaml"),
        new("metrics-binary-report", on_study("report", lambda b, d: next(
            (d / "pretrain").glob("A-*/metrics.jsonl")).write_bytes(garbage())),
            text="metrics.jsonl"),
        new("best-json-list-report", on_study("report", lambda b, d: (
            d / "search" / "s" / "best.json").write_text("[1]")), text="best.json"),
    ]


def _journal_probes() -> list[Probe]:
    new = probe("new", "tampered file")

    def edited(path: Path, box_journal: Path) -> None:
        lines = box_journal.read_text().splitlines()
        out = []
        for line in lines:
            record = json.loads(line)
            if "state" in record:
                record["state"] = 99
            out.append(json.dumps(record))
        path.write_text("\n".join(out) + "\n")

    def hand_edited(box: Box, directory: Path) -> None:
        original = box.shared / "template" / "study" / "search" / "s" / "study.journal"
        target = directory / "search" / "s" / "study.journal"
        target.unlink()
        edited(target, original)

    text = "study.journal"
    return [
        new("journal-garbage-report", on_study("report", journal(lambda p: p.write_bytes(
            garbage(4096)))), text=text),
        new("journal-garbage-search", on_study("search", journal(lambda p: p.write_bytes(
            garbage(4096)))), text=text),
        new("journal-state-99-report", on_study("report", hand_edited), text=text),
        new("journal-pickle-report", on_study("report", journal(lambda p: p.write_bytes(
            a_pickle()))), text=text),
        new("journal-symlink-report", on_study("report", journal(lambda p: p.symlink_to(
            _outside_of(p) / "passwd"))), text=text),
        new("journal-directory-report", on_study("report", journal(lambda p: p.mkdir())),
            text=text),
    ]


def _gpu_memory_probes() -> list[Probe]:
    new = probe("new", "tampered file")
    named = ("small_resnet-probe-b64.json",)
    return [
        new("gpu-memory-inf-dry-run", on_study("dry", gpu_file(
            '{"encoder": "small_resnet", "protocol": "probe", "batch_size": 64, '
            '"peak_bytes": 1073741824, "device_bytes": 1e400}')), expect="warn", text=named),
        new("gpu-memory-negative-dry-run", on_study("dry", gpu_file(measurement(
            peak_bytes=-5))), expect="warn", text=named),
        new("gpu-memory-list-dry-run", on_study("dry", gpu_file([1, 2])), expect="warn",
            text=named),
        new("gpu-memory-garbage-dry-run", on_study("dry", gpu_file(garbage())), expect="warn",
            text=named),
        # A link out of the experiment directory refuses every command that runs in it (as
        # pretrain-dir-link-dry-run): only ``status`` reads around it with a warning.
        new("gpu-memory-symlink-dry-run", on_study("dry", lambda b, d: b.link(
            d / "gpu_memory" / "small_resnet-probe-b64.json", b.outside / "passwd")),
            text=named),
        new("gpu-memory-batch-inf-dry-run", on_study("dry", gpu_file(
            '{"encoder": "small_resnet", "protocol": "probe", "batch_size": 1e400, '
            '"peak_bytes": 1073741824, "device_bytes": 85899345920}')), expect="warn",
            text=named),
    ]


def _autoscaler_probes() -> list[Probe]:
    new = probe("new", "tampered file")
    named = "RAYSWEEP_AUTOSCALER_CONFIG"
    return [
        new("autoscaler-binary", autoscaler(garbage()), text=named),
        new("autoscaler-float-huge", autoscaler(cluster_yaml(cpus=1e400)), text=named),
        new("autoscaler-int-huge", autoscaler(cluster_yaml(cpus=10**400)), text=named),
        new("autoscaler-cpus-negative", autoscaler(cluster_yaml(cpus=-8)), text=named),
        new("autoscaler-gpus-negative", autoscaler(cluster_yaml(gpus=-1)), text=named),
        new("autoscaler-max-workers-negative", autoscaler(cluster_yaml(max_workers=-3)),
            text=named),
        new("autoscaler-max-workers-minus-one", autoscaler(cluster_yaml(top=-1)), text=named,
            absent=("unlimited",)),
        new("autoscaler-list", autoscaler("- a\n- b\n"), text=named),
        new("autoscaler-missing", lambda b: Call(["run", b.spec(b.base()), "--dry-run"], env={
            "RAYSWEEP_AUTOSCALER_CONFIG": str(b.inputs / "absent.yaml")}), text=named),
        new("autoscaler-directory", lambda b: Call(["run", b.spec(b.base()), "--dry-run"], env={
            "RAYSWEEP_AUTOSCALER_CONFIG": str(b.inputs)}), text=named),
    ]


def _symlink_probes() -> list[Probe]:
    new = probe("new", "symlink")

    def class_link(box: Box) -> dict[str, Any]:
        root = box.folder("imgs", {"a": 3, "b": 3})
        box.link(root / "b", box.outside / "images" / "b")
        return _source("folder", root)

    def image_link(box: Box) -> dict[str, Any]:
        root = box.folder("imgs", {"a": 3, "b": 3})
        box.link(root / "b" / "9.png", box.outside / "images" / "a" / "0.png")
        return _source("folder", root)

    def loose_link(box: Box) -> dict[str, Any]:
        root = box.folder("imgs", {})
        _png(root / "x.png")
        box.link(root / "y.png", box.outside / "images" / "a" / "0.png")
        return _source("folder", root, labelled=False)

    def manifest_link(box: Box) -> dict[str, Any]:
        path = _manifest(box, ["a.png,a,train", "b.png,b,train", "c.png,a,test",
                               "d.png,b,test"], images=("a.png", "b.png", "c.png"))
        box.link(Path(path).parent / "d.png", box.outside / "images" / "b" / "0.png")
        return _source("manifest", path)

    def allowed(box: Box) -> dict[str, Any]:
        # The opt-in reads through the link: it points at images of the user's own (beside the
        # source's root, in inputs/), not at outside/, which no probe may read.
        root = box.folder("imgs", {"a": 3})
        elsewhere = box.folder("elsewhere", {"b": 3})
        box.link(root / "b", elsewhere / "b")
        data = _source("folder", root)
        data["sources"][0]["allow_outside_root"] = True
        return data

    def loop(box: Box) -> dict[str, Any]:
        box.link(box.inputs / "loop-a", box.inputs / "loop-b")
        box.link(box.inputs / "loop-b", box.inputs / "loop-a")
        return box.changed(("storage", str(box.inputs / "loop-a")))

    def linked_storage(box: Box) -> dict[str, Any]:
        (box.inputs / "real-runs").mkdir()
        box.link(box.inputs / "runs-link", box.inputs / "real-runs")
        return box.changed(("storage", str(box.inputs / "runs-link")))

    text = "allow_outside_root"
    return [
        new("class-folder-link-validate", _eval_data(class_link), text=text),
        new("class-folder-link-dry-run", _eval_data(class_link, "dry"), text=text),
        new("image-link-validate", _eval_data(image_link), text=text),
        new("loose-image-link-validate", on_spec("validate", lambda b: b.changed((
            "pretrain.0.data", loose_link(b)), ("pretrain.0.batch_size", 1))), text=text),
        new("manifest-image-link-validate", _eval_data(manifest_link), text=text),
        new("class-folder-link-allowed", _eval_data(allowed), expect="ok", text="ok: "),
        new("report-dir-link", on_study("report", lambda b, d: b.link(
            d / "report", b.outside / "planted")), text="report"),
        new("rows-dir-link-status", on_study("status", lambda b, d: b.link(
            d / "rows", b.outside / "planted")), expect="warn", text=("rows",)),
        new("rows-dir-link-run", on_study("run", lambda b, d: b.link(
            d / "rows", b.outside / "planted")), text="rows"),
        new("pretrain-dir-link-dry-run", on_study("dry", lambda b, d: b.link(
            d / "pretrain", b.outside / "planted")), text="pretrain"),
        new("search-dir-link-report", on_study("report", lambda b, d: b.link(
            d / "search", b.outside / "planted")), text="search"),
        new("storage-link-loop", on_spec("validate", loop), text="loop-a"),
        new("storage-is-a-link", on_spec("validate", linked_storage), expect="ok",
            text="ok: "),
    ]


def _environment_probes() -> list[Probe]:
    new = probe("new", "environment")
    stale, interval = "RAYSWEEP_LOCK_STALE_S", "RAYSWEEP_CHECKPOINT_INTERVAL_S"

    def on_base(command: str, **env: str | None) -> Callable[[Box], Call]:
        return on_spec(command, lambda b: b.base(), **env)

    def full_cache(box: Box) -> Call:
        box.cache.mkdir()
        return Call(["augment", "preview", "--pipeline", "barlow_twins", "--source", "digits",
                     "--out", str(box.inputs / "v.png"), "--image-size", "16", "-n", "2"],
                    wrap=["unshare", "-m", "sh", "-c",
                          'mount -t tmpfs -o size=64k tmpfs "$0" && exec "$@"', str(box.cache)])

    return [
        new("lock-stale-word-dry-run", on_base("dry", **{stale: "abc"}), text=stale),
        new("lock-stale-word-status", on_study("status", lambda b, d: None, **{stale: "abc"}),
            text=stale),
        new("lock-stale-negative-status", on_study("status", lock(holder()), **{stale: "-5"}),
            text=stale),
        new("lock-stale-nan-status", on_study("status", lock(holder()), **{stale: "nan"}),
            text=stale),
        new("lock-stale-inf-run", on_base("dry", **{stale: "inf"}), text=stale),
        new("lock-stale-zero-run", on_base("dry", **{stale: "0"}), text=stale),
        new("checkpoint-interval-word", on_base("dry", **{interval: "abc"}), text=interval),
        new("checkpoint-interval-negative", on_base("dry", **{interval: "-1"}), text=interval),
        new("checkpoint-interval-nan", on_base("dry", **{interval: "nan"}), text=interval),
        new("ray-log-level-loud", on_base("run", RAYSWEEP_RAY_LOG_LEVEL="LOUD"),
            text="RAYSWEEP_RAY_LOG_LEVEL"),
        new("cache-uri", on_base("dry", RAYSWEEP_CACHE="s3://bucket/cache"),
            text="RAYSWEEP_CACHE"),
        new("cache-uri-preview", lambda b: Call(
                ["augment", "preview", "--pipeline", "barlow_twins", "--source", "digits",
                 "--out", str(b.inputs / "v.png")], env={"RAYSWEEP_CACHE": "s3://bucket/c"}),
            text="RAYSWEEP_CACHE"),
        new("cache-is-a-file", lambda b: Call(["run", b.spec(b.base()), "--dry-run"], env={
            "RAYSWEEP_CACHE": str(b.outside / "passwd")}), text="passwd"),
        new("cache-read-only", on_base("dry", RAYSWEEP_CACHE="/proc/raysweep-cache"),
            text="/proc/raysweep-cache"),
        new("cache-full", full_cache, text="cache", root=True),
    ]


def _search_probes() -> list[Probe]:
    new = probe("new", "search")
    return [
        new("search-base-nope-validate", on_spec("validate", lambda b: search_spec(b, pretrain={
            **b.base()["pretrain"][0], "encoder": {"name": "small_resnet",
                                                   "weights": "pretrain:nope"}})),
            text="search[0].pretrain.encoder.weights"),
        new("search-base-nope-search", on_spec("search", lambda b: search_spec(b, pretrain={
            **b.base()["pretrain"][0], "encoder": {"name": "small_resnet",
                                                   "weights": "pretrain:nope"}})),
            text="search[0].pretrain.encoder.weights"),
        new("search-bounds-with-choices", on_spec("validate", lambda b: search_spec(b, space={
            "pretrain.lr_max": {"type": "choice", "choices": [0.001, 0.01], "low": 0.1,
                                "high": 1}})), text="search[0].space.pretrain.lr_max"),
        new("search-choices-with-uniform", on_spec("validate", lambda b: search_spec(b, space={
            "pretrain.lr_max": {"type": "uniform", "low": 0.001, "high": 0.01,
                                "choices": [0.5]}})), text="search[0].space.pretrain.lr_max"),
        new("search-metric-typo", on_spec("validate", lambda b: search_spec(
            b, metric="f1_weightd")), text="f1_weighted"),
        new("search-duplicate-name", on_spec("validate", lambda b: {
            **search_spec(b), "search": search_spec(b)["search"] * 2}),
            text="search[1].name"),
        new("search-grace-beyond-epochs", on_spec("validate", lambda b: search_spec(
            b, grace_period=5)), text="search[0].grace_period"),
    ]


def _resource_probes() -> list[Probe]:
    new = probe("new", "resources")

    def full_report(box: Box) -> Call:
        source = box.study()
        staged = box.inputs / "study"
        shutil.move(str(source), str(staged))
        # The tmpfs holds the study (a few MB: the encoder), then is filled to the last byte.
        script = ('mount -t tmpfs -o size=16m tmpfs "$0" && cp -a "$1" "$0"/study && '
                  'dd if=/dev/zero of="$0"/fill bs=4k >/dev/null 2>&1; shift; "$@"; rc=$?; '
                  'find "$0"/study/report -type f > "$0"/../.probe-after 2>/dev/null; exit $rc')
        return Call(["report", str(box.runs / "study")],
                    wrap=["unshare", "-m", "sh", "-c", script, str(box.runs), str(staged)])

    def no_partial_report(box: Box) -> str:
        after = box.root / ".probe-after"
        listed = after.read_text().split() if after.is_file() else []
        return f"left a partial report ({len(listed)} files)" if listed else ""

    def absurd(box: Box) -> dict[str, Any]:
        return box.changed(("pretrain.0.encoder.name", "resnet50"),
                           ("pretrain.0.data.image_size", 4096), ("pretrain.0.batch_size", 1024),
                           ("pretrain.0.projector", [64, 64]))

    return [
        new("report-disk-full", full_report, text="report", root=True,
            check=no_partial_report),
        new("estimate-absurd-size", on_spec("estimate", absurd), text="estimate"),
        new("gs-no-network", lambda b: Call(["validate", b.spec(b.changed((
            "storage", "gs://bucket/runs")))], wrap=["unshare", "-n"]), text="cannot reach",
            root=True, timeout=150, max_seconds=45),
        new("s3-no-network", lambda b: Call(["validate", b.spec(b.changed((
            "storage", "s3://bucket/runs")))], wrap=["unshare", "-n"]), text="cannot reach",
            root=True, timeout=150, max_seconds=45),
        new("s3-closed-port-status", lambda b: Call(["status", f"s3://bucket/runs/study?{CLOSED}"]),
            text="cannot reach", max_seconds=45),
    ]


def _message_probes() -> list[Probe]:
    new = probe("new", "message")

    def failing_trial(box: Box) -> dict[str, Any]:
        root = box.folder("imgs", {"a": 8, "b": 8})
        (root / "a" / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
        data = box.base()
        del data["pretrain"]
        data["evaluate"]["data"] = _source("folder", root)
        data["evaluate"]["protocols"] = ["probe"]
        data["evaluate"]["encoders"][0]["encoder"]["weights"] = "random"
        return data

    def gpu_cluster(box: Box) -> Call:
        path = box.file("cluster.yaml", cluster_yaml())
        return Call(["run", box.spec(box.changed(("evaluate.seeds", 1),
                                                 ("evaluate.protocols", ["probe"]))),
                     "--estimate"], env={"RAYSWEEP_AUTOSCALER_CONFIG": str(path)})

    def relative_status(box: Box) -> Call:
        box.study()
        return Call(["status", "runs/study"])

    return [
        new("override-nested-key", on_spec("validate", lambda b: b.changed((
            "evaluate.encoders.0.overrides", {"epochs.x": 3}))),
            text="evaluate.encoders[0].overrides.epochs"),
        new("override-grid-nested-key", on_spec("validate", lambda b: b.changed((
            "evaluate.encoders.0.overrides", {"batch_size.inner.deep": 3}))),
            text="spec.yaml: evaluate.encoders[0].overrides.batch_size"),
        new("npz-random-bytes", _eval_data(lambda b: _source("medmnist", b.file(
            "r.npz", garbage()))), text="r.npz", absent=("pickled", "unsafely")),
        new("npz-empty", _eval_data(lambda b: _source("medmnist", b.file("e.npz", b""))),
            text="e.npz", absent=("pickled", "unsafely")),
        new("stats-mean-inf", lambda b: Call(["report", "--from-stats", str(b.file(
            "s.csv", "model,mean,std,n\nA,inf,0.1,35\nB,0.6,0.1,35\n"))]), text="mean",
            absent=("std inf", "std 0.1 must")),
        new("stats-mean-nan", lambda b: Call(["report", "--from-stats", str(b.file(
            "s.csv", "model,mean,std,n\nA,nan,0.1,35\nB,0.6,0.1,35\n"))]), text="mean",
            absent=("std 0.1 must",)),
        new("evaluation-trial-fails", on_spec("run", failing_trial), text="bad.png", slow=True,
            timeout=600),
        new("status-relative-path", relative_status, expect="ok", text="experiment 'study'"),
        new("estimate-gpu-cluster-says-cpu", gpu_cluster, expect="ok",
            text="measured on this machine's CPU", timeout=300),
    ]


def new_round() -> list[Probe]:
    return (_secrets() + _lock_probes() + _row_probes() + _meta_and_results_probes()
            + _journal_probes() + _gpu_memory_probes() + _autoscaler_probes()
            + _symlink_probes() + _environment_probes() + _search_probes() + _resource_probes()
            + _message_probes())


# ---------------------------------------------------------------------- the held-out round
# Written after the mechanisms of the new round were fixed, and never used to tune them: more
# of the same kinds, through other files, other forms and other commands.


def _held_out_secrets() -> list[Probe]:
    held = probe("held-out", "secret")
    closed = CLOSED
    return [
        held("secret-gs-userinfo-status", lambda b: Call(
            ["status", f"gs://{KEY}:{SECRET}@bucket/runs/study?{closed}"]), text="***",
            max_seconds=60),
        held("secret-user-only-validate", on_spec("validate", storage_spec(
            f"s3://{KEY}@bucket/runs?{closed}")), text="***", max_seconds=60),
        held("secret-security-token-dry-run", on_spec("dry", storage_spec(
            f"s3://bucket/runs?X-Amz-Security-Token={TOKEN}&{closed}")), text="***",
            max_seconds=60),
        held("secret-upper-case-key-validate", on_spec("validate", storage_spec(
            f"s3://bucket/runs?AWS_SECRET_ACCESS_KEY={SECRET}&{closed}")), text="***",
            max_seconds=60),
        held("secret-api-key-report", lambda b: Call(
            ["report", f"s3://bucket/runs/study?api_key={SECRET}&{closed}"]), text="***",
            max_seconds=60),
        held("secret-cache-userinfo-dry-run", on_spec("dry", lambda b: b.base(),
                                                     RAYSWEEP_CACHE=f"gs://{KEY}:{SECRET}@b/c"),
             text="RAYSWEEP_CACHE"),
        held("secret-pretrain-manifest-path", on_spec("validate", lambda b: b.changed((
            "pretrain.0.data", _source("manifest", f"s3://{KEY}:{SECRET}@bucket/p.csv"))))),
    ]


def _held_out_files() -> list[Probe]:
    held = probe("held-out", "tampered file")
    lock_text = (".raysweep.lock",)
    named = ("seed-0000-", "counted as missing")

    def truncated_journal(box: Box, directory: Path) -> None:
        path = directory / "search" / "s" / "study.journal"
        text = path.read_text()
        path.write_text(text + text.splitlines()[-1][:20])  # a line still being appended

    def infinite_journal(box: Box, directory: Path) -> None:
        path = directory / "search" / "s" / "study.journal"
        with path.open("a") as journal:
            journal.write('{"op_code": 6, "worker_id": "w", "trial_id": 0, "state": 1, '
                          '"values": [1e400], "datetime_complete": null}\n')

    return [
        held("lock-empty-status", on_study("status", lock("")), expect="warn", text=lock_text),
        held("lock-nul-bytes-status", on_study("status", lock(b"\0" * 64)), expect="warn",
             text=lock_text),
        held("lock-pid-float-status", on_study("status", lock(holder(pid=1.5))),
             expect="warn", text=lock_text),
        held("lock-garbage-search", on_study("search", lock(garbage(77))), text=lock_text),
        held("row-empty-status", on_study("status", first_row(lambda p: p.write_text(""))),
             expect="warn", text=named),
        held("row-nan-status", on_study("status", first_row(lambda p: p.write_text(
            '{"condition": "A", "protocol": "probe", "seed": 0, "row_id": "x", '
            '"accuracy": NaN}'))), expect="warn", text=named),
        held("row-utf16-status", on_study("status", first_row(lambda p: p.write_bytes(
            json.dumps({"condition": "A"}).encode("utf-16")))), expect="warn", text=named),
        held("meta-empty-status", on_study("status", meta(lambda p: p.write_text(""))),
             expect="warn", text=("meta.json",)),
        held("meta-pickle-status", on_study("status", meta(lambda p: p.write_bytes(
            a_pickle()))), expect="warn", text=("meta.json",)),
        held("results-empty-report", on_study("report", lambda b, d: (
            d / "results.parquet").write_bytes(b"")), text="results.parquet"),
        held("best-json-garbage-report", on_study("report", search_file(
            "best.json", lambda p: p.write_bytes(garbage(99))) ), text="best.json"),
        held("best-json-symlink-report", on_study("report", search_file(
            "best.json", lambda p: p.symlink_to(_outside_of(p) / "passwd"))),
             text="best.json"),
        held("trials-parquet-garbage-report", on_study("report", search_file(
            "trials.parquet", lambda p: p.write_bytes(garbage(300)))), text="trials.parquet"),
        held("trials-csv-garbage-report", on_study("report", search_file(
            "trials.csv", lambda p: p.write_bytes(garbage(301)))), text="trials.csv"),
        held("journal-blank-report", on_study("report", search_file(
            "study.journal", lambda p: p.write_text("\n\n"))), text="study.journal"),
        held("journal-infinite-report", on_study("report", infinite_journal),
             text="study.journal"),
        held("journal-cut-last-line-report", on_study("report", truncated_journal),
             expect="ok", text="report: "),
        held("journal-state-99-search", on_study("search", search_file(
            "study.journal", lambda p: p.write_text(
                '{"op_code": 0, "worker_id": "w", "study_name": "x", "directions": [1]}\n'
                '{"op_code": 4, "worker_id": "w", "study_id": 0, "datetime_start": null, '
                '"state": 99}\n'))), text="study.journal"),
        held("metrics-symlink-report", on_study("report", lambda b, d: b.link(
            next((d / "pretrain").glob("A-*/metrics.jsonl")), b.outside / "passwd")),
             text="metrics.jsonl"),
        held("representations-list-report", on_study("report", lambda b, d: (
            d / "representations.json").write_text("[1]")), text="representations.json"),
        held("gpu-memory-string-dry-run", on_study("dry", gpu_file(measurement(
            device_bytes="lots"))), expect="warn", text=("small_resnet-probe-b64.json",)),
        held("gpu-memory-nested-dry-run", on_study("dry", gpu_file(measurement(
            encoder={"a": 1}))), expect="warn", text=("small_resnet-probe-b64.json",)),
        held("autoscaler-nul-bytes", autoscaler(b"cluster_name: c\0\n"),
             text="RAYSWEEP_AUTOSCALER_CONFIG"),
        held("autoscaler-gpus-word", autoscaler(cluster_yaml(gpus="many")),
             text="RAYSWEEP_AUTOSCALER_CONFIG"),
    ]


def _held_out_links() -> list[Probe]:
    held = probe("held-out", "symlink")

    return [
        held("encoder-link-dry-run", on_study("dry", lambda b, d: b.link(
            next((d / "pretrain").glob("A-*/encoder.pt")), b.outside / "passwd")),
             text="encoder.pt"),
        held("gpu-memory-dir-link-dry-run", on_study("dry", lambda b, d: b.link(
            d / "gpu_memory", b.outside / "planted")), text="gpu_memory"),
        held("report-figures-link-report", on_study("report", lambda b, d: b.link(
            d / "report" / "figures", b.outside / "planted")), text="figures"),
        held("search-folder-link-search", on_study("search", lambda b, d: b.link(
            d / "search" / "s", b.outside / "planted")), text="search"),
    ]


def _held_out_environment() -> list[Probe]:
    held = probe("held-out", "environment")

    def on_base(command: str, **env: str | None) -> Callable[[Box], Call]:
        return on_spec(command, lambda b: b.base(), **env)

    return [
        held("lock-stale-huge", on_base("dry", RAYSWEEP_LOCK_STALE_S="1e400"),
             text="RAYSWEEP_LOCK_STALE_S"),
        held("lock-stale-empty", on_base("dry", RAYSWEEP_LOCK_STALE_S=""), expect="ok"),
        held("checkpoint-interval-inf", on_base("dry", RAYSWEEP_CHECKPOINT_INTERVAL_S="inf"),
             text="RAYSWEEP_CHECKPOINT_INTERVAL_S"),
        held("decode-workers-zero", on_base("dry", RAYSWEEP_DECODE_WORKERS="0"),
             text="RAYSWEEP_DECODE_WORKERS"),
        held("decode-workers-word-validate", on_base("validate", RAYSWEEP_DECODE_WORKERS="all"),
             text="RAYSWEEP_DECODE_WORKERS"),
        held("store-timeout-negative", on_base("validate", RAYSWEEP_STORE_TIMEOUT_S="-3"),
             text="RAYSWEEP_STORE_TIMEOUT_S"),
        held("ray-log-level-lower-case", on_base("dry", RAYSWEEP_RAY_LOG_LEVEL="debug"),
             expect="ok"),
        held("cache-under-a-file", on_base("dry", RAYSWEEP_CACHE="/etc/hostname/cache"),
             text="RAYSWEEP_CACHE"),
    ]


def _held_out_search() -> list[Probe]:
    held = probe("held-out", "search")
    field = "search[0].space.pretrain.lr_max"
    return [
        held("search-num-samples-zero", on_spec("validate", lambda b: search_spec(
            b, num_samples=0)), text="search[0].num_samples"),
        held("search-space-empty", on_spec("validate", lambda b: search_spec(b, space={})),
             text="search[0].space"),
        held("search-low-above-high", on_spec("validate", lambda b: search_spec(b, space={
            "pretrain.lr_max": {"type": "uniform", "low": 0.1, "high": 0.01}})), text=field),
        held("search-unknown-type", on_spec("validate", lambda b: search_spec(b, space={
            "pretrain.lr_max": {"type": "gaussian", "low": 0.1, "high": 1}})), text=field),
        held("search-loguniform-zero-low", on_spec("validate", lambda b: search_spec(b, space={
            "pretrain.lr_max": {"type": "loguniform", "low": 0, "high": 1}})), text=field),
        held("search-mode-word", on_spec("validate", lambda b: search_spec(b, mode="biggest")),
             text="search[0].mode"),
        held("search-base-nope-dry-run", on_spec("dry", lambda b: search_spec(b, pretrain={
            **b.base()["pretrain"][0], "encoder": {"name": "small_resnet",
                                                   "weights": "pretrain:nope"}})),
             text="search[0].pretrain.encoder.weights"),
    ]


def _held_out_resources_and_messages() -> list[Probe]:
    held = probe("held-out", "resources")
    message = probe("held-out", "message")

    def absurd(box: Box) -> dict[str, Any]:  # the largest image size a spec accepts
        return box.changed(("pretrain.0.encoder.name", "resnet18"),
                           ("pretrain.0.data", {**DIGITS, "image_size": 4096}),
                           ("pretrain.0.batch_size", 512), ("pretrain.0.projector", [64, 64]))

    def truncated_npz(box: Box) -> dict[str, Any]:
        path = _npz(box, "t.npz", **_medmnist_arrays())
        data = path.read_bytes()
        path.write_bytes(data[:len(data) // 2])
        return _source("medmnist", path)

    return [
        held("estimate-absurd-resnet18", on_spec("estimate", absurd), text="estimate"),
        held("s3-closed-port-validate", on_spec("validate", storage_spec(
            f"s3://bucket/runs?{CLOSED}")), text="cannot reach", max_seconds=45),
        held("gs-closed-port-status", lambda b: Call(
            ["status", f"gs://bucket/runs/study?anonymous=true&{CLOSED}"]),
             text="cannot reach", max_seconds=60),
        message("stats-mean-minus-inf", lambda b: Call(["report", "--from-stats", str(b.file(
            "s.csv", "model,mean,std,n\nA,-inf,0.1,35\nB,0.6,0.1,35\n"))]), text="mean",
            absent=("std 0.1 must",)),
        message("stats-std-inf", lambda b: Call(["report", "--from-stats", str(b.file(
            "s.csv", "model,mean,std,n\nA,0.5,inf,35\nB,0.6,0.1,35\n"))]), text="std"),
        message("npz-text", _eval_data(lambda b: _source("medmnist", b.file(
            "t.npz", "hello, not an archive\n"))), text="t.npz", absent=("pickled", "unsafely")),
        message("npz-truncated", _eval_data(truncated_npz), text="t.npz",
                absent=("pickled", "unsafely")),
    ]


def held_out_round() -> list[Probe]:
    return (_held_out_secrets() + _held_out_files() + _held_out_links()
            + _held_out_environment() + _held_out_search() + _held_out_resources_and_messages())


def all_probes() -> list[Probe]:
    probes = old_round() + new_round() + held_out_round()
    ids = [(p.set, p.id) for p in probes]
    duplicates = {i for i in ids if ids.count(i) > 1}
    if duplicates:
        raise ValueError(f"duplicate probe ids: {sorted(duplicates)}")
    return probes
