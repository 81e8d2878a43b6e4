"""Every bad input is refused in one line, before anything is written or trained.

Each case below is one kind of bad input a user can give (a spec, its data, weights, a report
table, a command-line argument, a storage place). Run through ``raysweep.cli.main`` (or the
Python API), each must exit 2 (or raise the documented :class:`RaysweepError` subclass) with
exactly the expected number of ``error:`` lines on stderr (one, except where a case is about
reporting several problems at once), no traceback, no warning, and no file written anywhere
under the test's folder, which holds the storage root, the decode cache and a fake home.

The cases also generate ``docs/errors.md`` (:func:`test_errors_page_is_up_to_date`):
``RAYSWEEP_WRITE_DOCS=1 python -m pytest tests/test_bad_inputs.py -k errors_page`` rewrites it.
"""

from __future__ import annotations

import copy
import hashlib
import os
import pickle
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib.font_manager  # noqa: F401 - its font cache is written here, not by a case
import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from raysweep import api
from raysweep.cli import main
from raysweep.errors import (
    DataError,
    OutputError,
    Problems,
    RaysweepError,
    SpecError,
    WeightsError,
)

DOCS = Path(__file__).resolve().parents[1] / "docs" / "errors.md"
DIGITS = {"sources": [{"kind": "digits"}], "image_size": 16}

# ------------------------------------------------------------------------------- builders


def base_spec(tmp: Path) -> dict[str, Any]:
    """A spec that validates and could run: a small pre-training run and its evaluation (on
    the same images: a transductive toy, so the run allows its test overlap)."""
    return copy.deepcopy({
        "name": "exp",
        "storage": str(tmp / "runs"),
        "pretrain": [{"name": "bt", "data": DIGITS, "encoder": {"name": "small_resnet"},
                      "batch_size": 32, "projector": [32, 32], "epochs": 1,
                      "allow_test_overlap": True}],

        "evaluate": {"data": DIGITS, "seeds": 2, "encoders": [
            {"name": "bt", "encoder": {"name": "small_resnet", "weights": "pretrain:bt"}}]},
    })


def changed(tmp: Path, *changes: tuple[str, Any]) -> dict[str, Any]:
    """``base_spec`` with dotted-path changes (``pretrain.0.lr_max``; list items by index)."""
    data = base_spec(tmp)
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


def spec_file(tmp: Path, data: Any, name: str = "spec.yaml") -> str:
    path = tmp / "inputs" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return str(path)


def text_file(tmp: Path, name: str, content: str | bytes) -> str:
    path = tmp / "inputs" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    return str(path)


def image_folder(tmp: Path, name: str, counts: dict[str, int]) -> str:
    """A folder of tiny PNGs, one sub-folder per class."""
    root = tmp / "inputs" / name
    rng = np.random.default_rng(0)
    for cls, count in counts.items():
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            pixels = rng.integers(0, 256, size=(12, 12, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / cls / f"{i}.png")
    root.mkdir(parents=True, exist_ok=True)
    return str(root)


def manifest(tmp: Path, name: str, rows: list[tuple[str, str, str]]) -> str:
    """A manifest ``path,label,split`` whose images exist beside it."""
    folder = tmp / "inputs" / name
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    for path, _, _ in rows:
        Image.fromarray(rng.integers(0, 256, size=(12, 12, 3), dtype=np.uint8)).save(folder / path)
    lines = ["path,label,split"] + [",".join(row) for row in rows]
    (folder / "manifest.csv").write_text("\n".join(lines) + "\n")
    return str(folder / "manifest.csv")


def weights_file(tmp: Path, name: str, obj: Any) -> str:
    path = tmp / "inputs" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(obj, path)
    return str(path)


def small_resnet_state() -> dict[str, torch.Tensor]:
    from raysweep.models import build_encoder

    return {k: v.clone() for k, v in build_encoder("small_resnet").state_dict().items()}


def with_weights(tmp: Path, path: str) -> dict[str, Any]:
    return changed(tmp, ("evaluate.encoders.0.encoder.weights", f"file:{path}"))


class _Evil:
    """Unpickling this would create the marker file: the refusal proves it is never run."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


# ---------------------------------------------------------------------------------- cases


@dataclass(frozen=True)
class Case:
    """One bad input: its class and description (the docs table), how to build it in a
    fresh folder (CLI arguments, or an API call), and text its message must contain."""

    id: str
    cls: str
    description: str
    build: Callable[[Path], list[str] | Callable[[], Any]]
    expect: str
    lines: int = 1
    error: type[RaysweepError] = RaysweepError  # API cases: the documented error class


def spec_case(id: str, description: str, data: Callable[[Path], Any], expect: str,
              command: str = "validate", lines: int = 1) -> Case:
    def build(tmp: Path) -> list[str]:
        path = spec_file(tmp, data(tmp))
        return {"validate": ["validate", path], "dry": ["run", path, "--dry-run"],
                "run": ["run", path], "pretrain": ["pretrain", path],
                "evaluate": ["evaluate", path], "search": ["search", path]}[command]
    return Case(id, "spec", description, build, expect, lines)


def raw_spec_case(id: str, description: str, content: str | bytes, expect: str) -> Case:
    return Case(id, "spec file", description,
                lambda tmp: ["validate", text_file(tmp, "spec.yaml", content)], expect)


def data_case(id: str, description: str, data: Callable[[Path], Any], expect: str,
              command: str = "run") -> Case:
    case = spec_case(id, description, data, expect, command)
    return Case(case.id, "data", description, case.build, expect)


def weights_case(id: str, description: str, data: Callable[[Path], Any], expect: str,
                 command: str = "evaluate") -> Case:
    case = spec_case(id, description, data, expect, command)
    return Case(case.id, "weights", description, case.build, expect)


def _grid(tmp: Path, **section: Any) -> dict[str, Any]:
    data = base_spec(tmp)
    data["pretrain"] = {"base": data["pretrain"][0] | {"name": None}, **section}
    del data["pretrain"]["base"]["name"]
    data["evaluate"]["encoders"][0]["encoder"]["weights"] = "random"
    return data


def _search(tmp: Path, **changes: Any) -> dict[str, Any]:
    data = base_spec(tmp)
    search = {"name": "s", "pretrain": data["pretrain"][0], "evaluate": {"data": DIGITS},
        "space": {"pretrain.lr_max": {"type": "loguniform", "low": 1e-4, "high": 1e-2}}}
    search.update(changes)
    data["search"] = [search]
    return data


def _stats(tmp: Path, content: str, *extra: str) -> list[str]:
    return ["report", "--from-stats", text_file(tmp, "stats.csv", content), *extra]


STATS = "model,mean,std,n\nA,0.70,0.02,35\nB,0.65,0.03,35\n"


def _preview(tmp: Path, *extra: str) -> list[str]:
    args = {"--pipeline": "barlow_twins", "--source": "digits",
            "--out": str(tmp / "inputs" / "views.png")}
    flags = list(extra)
    for flag, value in args.items():
        if flag not in flags:
            flags += [flag, value]
    return ["augment", "preview", *flags]


def _evil_weights(tmp: Path) -> dict[str, Any]:
    path = tmp / "inputs" / "evil.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as handle:
        pickle.dump({"conv1.weight": _Evil(tmp / "pwned")}, handle)
    return with_weights(tmp, str(path))


def _experiment_dir(tmp: Path) -> Path:
    directory = tmp / "inputs" / "experiment"
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def _api_infinite_weights(tmp: Path) -> Callable[[], Any]:
    from raysweep.models import build_encoder

    path = weights_file(tmp, "n.pt", {**small_resnet_state(),
                                      "bn1.running_var": torch.full((16,), np.inf)})
    return lambda: build_encoder("small_resnet", f"file:{path}")


def _api_stats_out_dir(tmp: Path) -> Callable[[], Any]:
    table, out = text_file(tmp, "s.csv", STATS), str(_experiment_dir(tmp))
    return lambda: api.report_from_stats(table, out=out)


def _api_one_class(tmp: Path) -> Callable[[], Any]:
    from raysweep.config import DatasetSpec
    from raysweep.data import index_dataset

    spec = DatasetSpec(sources=({"kind": "folder", "path": image_folder(tmp, "o", {"a": 4})},),
                       image_size=16)
    return lambda: index_dataset(spec).labelled_indices("train")


CASES: list[Case] = [
    # ---- the spec file itself
    Case("spec-missing", "spec file", "spec file does not exist",
         lambda tmp: ["validate", str(tmp / "inputs" / "absent.yaml")], "spec file not found"),
    Case("spec-directory", "spec file", "spec path is a directory",
         lambda tmp: ["validate", str(_experiment_dir(tmp))], "is a directory, not a spec file"),
    raw_spec_case("spec-latin1", "spec saved as latin-1",
                  "name: exp\ndescription: caf\xe9\n".encode("latin-1"), "not UTF-8 text"),
    raw_spec_case("spec-utf16", "spec saved as UTF-16", "name: exp\n".encode("utf-16"),
                  "UTF-16 encoded; save it as UTF-8"),
    raw_spec_case("spec-binary", "binary file given as a spec", b"\x89PNG\r\n\x1a\n\x00\x00",
                  "not a text file"),
    raw_spec_case("spec-yaml-syntax", "YAML syntax error", "name: [unclosed\n",
                  "invalid YAML at line"),
    raw_spec_case("spec-python-tag", "YAML python tag (code execution attempt)",
                  "name: !!python/object/apply:os.system ['touch pwned']\n", "invalid YAML"),
    raw_spec_case("spec-duplicate-key", "a key given twice (the last would win silently)",
                  "name: a\nname: b\n", "duplicate key 'name' (first given at line 1)"),
    raw_spec_case("spec-duplicate-nested-key", "a nested key given twice",
                  "name: a\nreport:\n  alpha: 0.05\n  alpha: 0.01\n", "duplicate key 'alpha'"),
    raw_spec_case("spec-bad-date", "a value YAML reads as an impossible date",
                  "name: a\ndescription: 2024-13-45\n", "month must be in 1..12"),
    raw_spec_case("spec-top-list", "top level is a list", "- name: a\n",
                  "the top level must be a mapping"),
    # ---- values in the spec
    spec_case("unknown-key", "unknown key (typo)",
              lambda tmp: changed(tmp, ("pretrain.0.lamda_offdiag", 0.1)),
              "pretrain[0].lamda_offdiag: unknown key (did you mean 'lambda_offdiag'?)"),
    spec_case("missing-name", "required key missing",
              lambda tmp: {k: v for k, v in base_spec(tmp).items() if k != "name"},
              "name: required key is missing"),
    spec_case("wrong-type", "integer field given a word",
              lambda tmp: changed(tmp, ("pretrain.0.batch_size", "big")),
              "pretrain[0].batch_size: expected an integer"),
    spec_case("wrong-bool", "true/false field given a word",
              lambda tmp: changed(tmp, ("pretrain.0.deterministic", "yes")),
              "expected true or false"),
    spec_case("negative", "negative weight",
              lambda tmp: changed(tmp, ("pretrain.0.alpha", -0.1)),
              "pretrain[0].alpha: must be >= 0, got -0.1"),
    spec_case("division-by-zero", "fraction with a zero denominator",
              lambda tmp: changed(tmp, ("pretrain.0.lambda_offdiag", "1/0")),
              "lambda_offdiag: expected a finite number, got str '1/0'"),
    spec_case("infinite", "infinite learning rate",
              lambda tmp: changed(tmp, ("pretrain.0.lr_max", float("inf"))),
              "lr_max: expected a finite number, got float inf"),
    spec_case("nan", "NaN learning rate",
              lambda tmp: changed(tmp, ("evaluate.settings", {"lr_max": float("nan")})),
              "evaluate.settings.lr_max: expected a finite number"),
    spec_case("seeds-huge", "absurd number of seeds (dry-run)",
              lambda tmp: changed(tmp, ("evaluate.seeds", 1e23)),
              "evaluate.seeds: must be in [1, 10000]", command="dry"),
    spec_case("seeds-zero", "zero seeds", lambda tmp: changed(tmp, ("evaluate.seeds", 0)),
              "evaluate.seeds: must be in [1, 10000], got 0"),
    spec_case("image-size-huge", "absurd image size",
              lambda tmp: changed(tmp, ("evaluate.data", DIGITS | {"image_size": 100_000})),
              "evaluate.data.image_size: must be in [8, 4096], got 100000"),
    spec_case("image-size-tiny", "image size below 8 px",
              lambda tmp: changed(tmp, ("pretrain.0.data", DIGITS | {"image_size": 2})),
              "pretrain[0].data.image_size: must be in [8, 4096], got 2"),
    spec_case("batch-workers", "batch not divisible by the DDP workers",
              lambda tmp: changed(tmp, ("pretrain.0.num_workers", 3)),
              "pretrain[0].batch_size: 32 must be a multiple of num_workers x grad_accum_steps "
              "= 3 (3 x 1)"),
    spec_case("batch-accum", "batch not divisible by workers x accumulation steps",
              lambda tmp: changed(tmp, ("pretrain.0.num_workers", 2),
                                  ("pretrain.0.grad_accum_steps", 3)),
              "= 6 (2 x 3)"),
    spec_case("strength-range", "augmentation strength out of range",
              lambda tmp: changed(tmp, ("pretrain.0.strength", 2.5)),
              "pretrain[0].strength: must be in [0.0, 2.0], got 2.5"),
    spec_case("unknown-pipeline", "unknown augmentation pipeline",
              lambda tmp: changed(tmp, ("pretrain.0.augmentation", "barlow")),
              "unknown pipeline 'barlow' (did you mean 'barlow_twins'?)"),
    spec_case("unknown-weights", "unknown weight source",
              lambda tmp: changed(tmp, ("evaluate.encoders.0.encoder.weights", "imagenet")),
              "unknown weight source 'imagenet'"),
    spec_case("dangling-reference", "pretrain:NAME naming no run",
              lambda tmp: changed(tmp, ("evaluate.encoders.0.encoder.weights", "pretrain:tb")),
              "no pretrain run named 'tb' (did you mean 'bt'?)"),
    spec_case("pretrain-cycle", "pretrain runs waiting for each other",
              lambda tmp: changed(tmp, ("pretrain", [
                  base_spec(tmp)["pretrain"][0] | {"name": "a", "encoder": {
                      "name": "small_resnet", "weights": "pretrain:b"}},
                  base_spec(tmp)["pretrain"][0] | {"name": "b", "encoder": {
                      "name": "small_resnet", "weights": "pretrain:a"}}]),
                  ("evaluate.encoders.0.encoder.weights", "pretrain:a")),
              "cycle: a -> b -> a"),
    spec_case("duplicate-run", "two pretrain runs of one name",
              lambda tmp: changed(tmp, ("pretrain", base_spec(tmp)["pretrain"] * 2)),
              "pretrain[1].name: duplicate name 'bt'"),
    spec_case("duplicate-condition", "two evaluated conditions of one name",
              lambda tmp: changed(tmp, ("evaluate.encoders",
                                        base_spec(tmp)["evaluate"]["encoders"] * 2)),
              "evaluate.encoders[1].name: duplicate name 'bt'"),
    spec_case("label-fraction", "label fraction 0",
              lambda tmp: changed(tmp, ("evaluate.data", DIGITS | {"label_fraction": 0})),
              "label_fraction: must be in (0, 1]"),
    spec_case("split-fractions", "test + validation fractions >= 1",
              lambda tmp: changed(tmp, ("evaluate.data", DIGITS | {"test_fraction": 0.6,
                                                                   "val_fraction": 0.5})),
              "test_fraction + val_fraction must be < 1"),
    spec_case("override-key", "unknown key in a condition's overrides",
              lambda tmp: changed(tmp, ("evaluate.encoders.0.overrides", {"epoch": 3})),
              "evaluate.encoders[0].overrides.epoch: unknown key (did you mean 'epochs'?)"),
    spec_case("search-key", "search over a key that cannot be searched",
              lambda tmp: _search(tmp, space={"pretrain.epoch": {"type": "int", "low": 1,
                                                                 "high": 3}}),
              "search[0].space.pretrain.epoch: cannot be searched"),
    spec_case("search-range", "search range with high <= low",
              lambda tmp: _search(tmp, space={"pretrain.lr_max": {
                  "type": "uniform", "low": 0.1, "high": 0.01}}),
              "search[0].space.pretrain.lr_max.high: must be greater than low"),
    spec_case("supervised-unlabelled", "supervised pre-training on unlabelled sources only",
              lambda tmp: changed(tmp, ("pretrain.0.method", "supervised"), (
                  "pretrain.0.data", {"sources": [{"kind": "digits", "labelled": False}]})),
              "pretrain[0].data.sources: a supervised run needs a labelled source"),
    spec_case("template-field", "grid name template with an unknown field",
              lambda tmp: _grid(tmp, product={"a": {"x": None}}, name="{b}"),
              "pretrain.name: unknown field {b}"),
    spec_case("template-attribute", "grid name template with an attribute lookup",
              lambda tmp: _grid(tmp, product={"a": {"x": None}}, name="{a.__class__}"),
              "pretrain.name: unknown field {a.__class__}"),
    spec_case("template-format", "grid name template with a format spec",
              lambda tmp: _grid(tmp, product={"a": {"x": None}}, name="{a:>99}"),
              "only plain fields are allowed"),
    spec_case("grid-key", "unknown key in a grid",
              lambda tmp: _grid(tmp, prodcut={"a": {"x": None}}),
              "pretrain.prodcut: unknown key (did you mean 'product'?)"),
    spec_case("grid-extra", "grid extra: that is not a list",
              lambda tmp: _grid(tmp, product={"a": {"x": None}}, extra={"name": "y"}),
              "pretrain.extra: expected a list of runs"),
    spec_case("report-alpha", "report alpha outside (0, 1)",
              lambda tmp: changed(tmp, ("report", {"alpha": 1.5})),
              "report.alpha: must be in (0, 1), got 1.5"),
    spec_case("every-problem", "three mistakes: all reported at once, one line each",
              lambda tmp: changed(tmp, ("pretrain.0.alpha", -1), ("evaluate.seeds", 0),
                                  ("report", {"alpha": 2})),
              "report.alpha: must be in (0, 1)", lines=3),
    # ---- data the spec names
    data_case("folder-missing", "image folder does not exist",
              lambda tmp: changed(tmp, ("evaluate.data", {"sources": [
                  {"kind": "folder", "path": str(tmp / "inputs" / "nowhere")}]})),
              "evaluate.data.sources[0]: image folder not found"),
    data_case("manifest-missing", "manifest does not exist",
              lambda tmp: changed(tmp, ("pretrain.0.data", {"sources": [
                  {"kind": "manifest", "path": str(tmp / "inputs" / "m.csv")}]})),
              "pretrain[0].data.sources[0]: manifest not found", command="pretrain"),
    data_case("medmnist-missing", "MedMNIST file does not exist",
              lambda tmp: changed(tmp, ("evaluate.data", {"sources": [
                  {"kind": "medmnist", "path": str(tmp / "inputs" / "b.npz")}]})),
              "medmnist file not found", command="evaluate"),
    data_case("medmnist-name", "MedMNIST flag not downloaded",
              lambda tmp: changed(tmp, ("evaluate.data", {"sources": [
                  {"kind": "medmnist", "name": "breastmnist"}]})),
              "download it with: mkdir -p", command="dry"),
    data_case("one-class", "evaluation data with a single class",
              lambda tmp: changed(tmp, ("evaluate.data", {"sources": [{
                  "kind": "folder", "path": image_folder(tmp, "one", {"cat": 6})}],
                  "image_size": 16})),
              "has only class 'cat'; classification needs at least two", command="validate"),
    data_case("one-class-test", "evaluation test split with a single class",
              lambda tmp: changed(tmp, ("evaluate.data", {"sources": [{
                  "kind": "manifest", "path": manifest(tmp, "m", [
                      ("a.png", "x", "train"), ("b.png", "y", "train"),
                      ("c.png", "x", "test"), ("d.png", "x", "test")])}], "image_size": 16})),
              "split 'test' has only class 'x'"),
    data_case("unknown-class", "class filter naming an absent class",
              lambda tmp: changed(tmp, ("evaluate.data", {"sources": [{
                  "kind": "folder", "path": image_folder(tmp, "two", {"a": 3, "b": 3}),
                  "classes": ["a", "c"]}], "image_size": 16})),
              "classes: no sub-folder 'c'"),
    data_case("label-count", "more labels asked than training images",
              lambda tmp: changed(tmp, ("evaluate.data", DIGITS | {"label_count": 5000})),
              "label_count 5000 exceeds the"),
    data_case("too-few-images", "pre-training data smaller than one batch",
              lambda tmp: changed(tmp, ("pretrain.0.data", {"sources": [{
                  "kind": "folder", "path": image_folder(tmp, "few", {"a": 3, "b": 3})}],
                  "image_size": 16})),
              "6 images are fewer than one batch of 32"),
    data_case("supervised-no-train-labels", "supervised pre-training without labelled "
              "training images (before any run of its wave trains)",
              lambda tmp: changed(tmp, ("pretrain", [
                  base_spec(tmp)["pretrain"][0] | {"name": "ssl"},
                  base_spec(tmp)["pretrain"][0] | {"method": "supervised", "data": {
                      "sources": [{"kind": "manifest", "split": "test", "path": manifest(
                          tmp, "t", [(f"{i}.png", "xy"[i % 2], "test") for i in range(40)])}],
                      "image_size": 16}}])),
              "pretrain[1].data: a supervised run needs labelled training images"),
    data_case("class-oversample", "oversampling a class the source lacks",
              lambda tmp: changed(tmp, ("pretrain.0.data", {"sources": [
                  {"kind": "digits", "class_oversample": {"11": 2}}]})),
              "class_oversample: unknown class '11'"),
    data_case("empty-split", "source split with no images",
              lambda tmp: changed(tmp, ("evaluate.data", {"sources": [{
                  "kind": "manifest", "split": "val", "path": manifest(tmp, "v", [
                      ("a.png", "x", "train"), ("b.png", "y", "test")])}]})),
              "has no images in split 'val'"),
    # ---- weights
    weights_case("weights-missing", "file: weights that do not exist",
                 lambda tmp: with_weights(tmp, str(tmp / "inputs" / "absent.pt")),
                 "absent.pt not found"),
    weights_case("weights-empty", "file: weights of 0 bytes",
                 lambda tmp: with_weights(tmp, text_file(tmp, "empty.pt", b"")),
                 "the file is empty (0 bytes)"),
    weights_case("weights-pickle", "file: weights with a malicious pickle",
                 _evil_weights, "refused by the safe loader, which reads tensors and plain "
                 "containers only and never runs code in a file"),
    weights_case("weights-nan", "file: weights holding NaN",
                 lambda tmp: with_weights(tmp, weights_file(tmp, "nan.pt", {
                     **small_resnet_state(), "conv1.weight": torch.full((16, 3, 3, 3), np.nan)})),
                 "tensor conv1.weight holds 432 NaN or infinite value(s) of 432"),
    weights_case("weights-garbage", "file: weights that are not a checkpoint",
                 lambda tmp: with_weights(tmp, text_file(tmp, "garbage.pt", b"hello world")),
                 "not a PyTorch checkpoint or a damaged one"),
    weights_case("weights-architecture", "file: weights of another architecture",
                 lambda tmp: with_weights(tmp, weights_file(tmp, "r.pt", {
                     k: torch.zeros(1) for k in small_resnet_state()})),
                 "do not fit small_resnet"),
    weights_case("weights-strings", "file: weights holding strings",
                 lambda tmp: with_weights(tmp, weights_file(tmp, "s.pt", {"conv1.weight": "x"})),
                 "entry 'conv1.weight' is a str, not a tensor"),
    weights_case("weights-layout", "moco: weights in another library's layout",
                 lambda tmp: changed(tmp, ("evaluate.encoders.0.encoder.weights", "moco:" + weights_file(
                     tmp, "solo.ckpt", {"state_dict": {
                         f"backbone.{k}": v for k, v in small_resnet_state().items()}}))),
                 "not a moco checkpoint: no key starts with module.encoder_q. or encoder_q."),
    weights_case("weights-layout-keys", "timm: weights whose keys do not fit",
                 lambda tmp: changed(tmp, ("evaluate.encoders.0.encoder.weights", "timm:" + weights_file(
                     tmp, "deep_stem.pth", {("conv1.0.weight" if k == "conv1.weight" else k): v
                                            for k, v in small_resnet_state().items()}))),
                 "1 encoder tensors are missing from the file (conv1.weight) and 1 tensors in "
                 "the file are unexpected (conv1.0.weight)"),
    weights_case("weights-hub-missing", "torchvision weights not in the hub cache",
                 lambda tmp: changed(tmp, ("evaluate.encoders.0.encoder", {
                     "name": "resnet18", "weights": "torchvision:IMAGENET1K_V1"})),
                 "offline nothing is downloaded", command="validate"),
    weights_case("weights-hub-arch", "Barlow Twins hub weights for a ResNet-18",
                 lambda tmp: changed(tmp, ("evaluate.encoders.0.encoder", {
                     "name": "resnet18", "weights": "barlowtwins"})),
                 "barlowtwins publishes a resnet50 only, not resnet18", command="dry"),
    # ---- storage and outputs
    Case("storage-file", "storage", "storage: is a file",
         lambda tmp: ["run", spec_file(tmp, changed(
             tmp, ("storage", text_file(tmp, "runs.txt", "x"))))], "is a file, not a directory"),
    Case("storage-under-file", "storage", "storage: inside a file",
         lambda tmp: ["validate", spec_file(tmp, changed(
             tmp, ("storage", text_file(tmp, "f.txt", "x") + "/runs")))],
         "cannot be created: "),
    Case("storage-unwritable", "storage", "storage: on a read-only file system",
         lambda tmp: ["run", spec_file(tmp, changed(tmp, ("storage", "/proc/raysweep-runs")))],
         "storage /proc/raysweep-runs is not writable"),
    Case("cache-file", "storage", "decode cache_dir is a file",
         lambda tmp: ["validate", spec_file(tmp, changed(tmp, ("evaluate.data", DIGITS | {
             "cache_dir": text_file(tmp, "cache.txt", "x")})))],
         "evaluate.data.cache_dir: decode cache"),
    # ---- reports
    Case("alpha-range", "report", "--alpha outside (0, 1)",
         lambda tmp: _stats(tmp, STATS, "--alpha", "5"), "argument --alpha: must be in (0, 1)"),
    Case("alpha-nan", "report", "--alpha nan",
         lambda tmp: _stats(tmp, STATS, "--alpha", "nan"), "must be in (0, 1), got 'nan'"),
    Case("alpha-zero", "report", "--alpha 0", lambda tmp: _stats(tmp, STATS, "--alpha", "0"),
         "must be in (0, 1), got '0'"),
    Case("correction", "report", "unknown --correction",
         lambda tmp: _stats(tmp, STATS, "--correction", "holmes"), "invalid choice: 'holmes'"),
    Case("stats-std-zero", "report", "--from-stats with both standard deviations 0",
         lambda tmp: _stats(tmp, "model,mean,std,n\nA,0.7,0,35\nB,0.6,0,35\n"),
         "both standard deviations are 0, so Welch's t is undefined"),
    Case("stats-empty", "report", "--from-stats table without rows",
         lambda tmp: _stats(tmp, "model,mean,std,n\n"), "has 0 row(s)"),
    Case("stats-one-row", "report", "--from-stats table with one row",
         lambda tmp: _stats(tmp, "model,mean,std,n\nA,0.7,0.1,35\n"), "has 1 row(s)"),
    Case("stats-missing", "report", "--from-stats file does not exist",
         lambda tmp: ["report", "--from-stats", str(tmp / "inputs" / "absent.csv")],
         "absent.csv not found"),
    Case("stats-negative-std", "report", "--from-stats negative standard deviation",
         lambda tmp: _stats(tmp, "model,mean,std,n\nA,0.7,-0.1,35\nB,0.6,0.1,35\n"),
         "line 2: std -0.1 must be finite and >= 0"),
    Case("stats-out-dir", "report", "--from-stats --out is a directory",
         lambda tmp: _stats(tmp, STATS, "--out", str(_experiment_dir(tmp))),
         "is a directory; give a file name"),
    Case("report-out-file", "report", "report --out is a file",
         lambda tmp: ["report", str(_experiment_dir(tmp)), "--out",
                      text_file(tmp, "out.txt", "x")],
         "report directory "),
    Case("report-nothing", "report", "report without a directory or table",
         lambda tmp: ["report"], "give an EXPERIMENT_DIR or --from-stats"),
    Case("report-both", "report", "report with a directory and --from-stats",
         lambda tmp: _stats(tmp, STATS) + [str(_experiment_dir(tmp))], "not both"),
    Case("report-comparisons", "report", "--comparisons with an experiment directory",
         lambda tmp: ["report", str(_experiment_dir(tmp)), "--comparisons",
                      text_file(tmp, "c.csv", "model_1,model_2\nA,B\n")],
         "--comparisons goes with --from-stats"),
    Case("report-missing-dir", "report", "experiment directory does not exist",
         lambda tmp: ["report", str(tmp / "inputs" / "nowhere")], "nowhere"),
    # ---- command-line arguments
    Case("preview-pipeline", "CLI argument", "augment preview: unknown --pipeline "
         "(refused before the source is decoded)",
         lambda tmp: _preview(tmp, "--pipeline", "barlow"),
         "invalid choice: 'barlow' (choose from 'barlow_twins'"),
    Case("preview-n-zero", "CLI argument", "augment preview: -n 0",
         lambda tmp: _preview(tmp, "-n", "0"), "argument -n: must be in [1, 64], got '0'"),
    Case("preview-n-word", "CLI argument", "augment preview: -n not a number",
         lambda tmp: _preview(tmp, "-n", "many"), "argument -n: expected an integer"),
    Case("preview-strength-nan", "CLI argument", "augment preview: --strength nan",
         lambda tmp: _preview(tmp, "--strength", "nan"), "must be in [0, 2], got 'nan'"),
    Case("preview-strength-big", "CLI argument", "augment preview: --strength 5",
         lambda tmp: _preview(tmp, "--strength", "5"), "must be in [0, 2], got '5'"),
    Case("preview-size-zero", "CLI argument", "augment preview: --image-size 0",
         lambda tmp: _preview(tmp, "--image-size", "0"), "must be in [8, 4096], got '0'"),
    Case("preview-size-huge", "CLI argument", "augment preview: --image-size 100000",
         lambda tmp: _preview(tmp, "--image-size", "100000"), "must be in [8, 4096]"),
    Case("preview-seed", "CLI argument", "augment preview: negative --seed",
         lambda tmp: _preview(tmp, "--seed", "-1"), "argument --seed: must be in [0, "),
    Case("preview-out-dir", "CLI argument", "augment preview: --out is a directory",
         lambda tmp: _preview(tmp, "--out", str(_experiment_dir(tmp))),
         "--out " ),
    Case("unknown-command", "CLI argument", "unknown command",
         lambda tmp: ["trian"], "invalid choice: 'trian'"),
    Case("run-no-spec", "CLI argument", "run without a spec",
         lambda tmp: ["run"], "the following arguments are required: SPEC"),
    Case("validate-no-file", "CLI argument", "validate without a file",
         lambda tmp: ["validate"], "the following arguments are required: FILE"),
    # ---- the Python API
    Case("api-run", "API", "api.run of a mapping with a bad value",
         lambda tmp: lambda: api.run(changed(tmp, ("pretrain.0.alpha", -1))),
         "<spec>: pretrain[0].alpha: must be >= 0", error=SpecError),
    Case("api-check", "API", "api.check of a spec whose data is missing",
         lambda tmp: lambda: api.check(changed(tmp, ("evaluate.data", {"sources": [
             {"kind": "folder", "path": str(tmp / "inputs" / "nowhere")}]}))),
         "image folder not found", error=Problems),
    Case("api-weights", "API", "build_encoder of infinite weights",
         _api_infinite_weights, "tensor bn1.running_var holds 16 NaN or infinite value(s)",
         error=WeightsError),
    Case("api-from-stats", "API", "api.report_from_stats with out= a directory",
         _api_stats_out_dir, "is a directory", error=OutputError),
    Case("api-data", "API", "a one-class training split",
         _api_one_class, "has only class 'a'", error=DataError),
]


# --------------------------------------------------------------------------------- runner


def snapshot(root: Path) -> dict[str, str]:
    """Every file and folder under ``root`` with a digest of its bytes."""
    entries = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        entries[rel] = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "dir"
    return entries


@dataclass
class Outcome:
    status: int | None
    stderr: str
    stdout: str
    message: str
    error: BaseException | None
    warnings: list[str]
    written: dict[str, Any]


def run_case(case: Case, tmp: Path, monkeypatch: pytest.MonkeyPatch,
             capsys: pytest.CaptureFixture[str]) -> Outcome:
    """Build the case in ``tmp`` (a fake home, cache and torch hub inside), run it, and
    report what it printed, raised and wrote."""
    home = tmp / "home"
    home.mkdir(parents=True, exist_ok=True)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("TORCH_HOME", str(home / ".cache" / "torch"))
    monkeypatch.setenv("RAYSWEEP_CACHE", str(tmp / "cache"))
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.chdir(tmp)
    action = case.build(tmp)
    capsys.readouterr()
    before = snapshot(tmp)
    status, error = None, None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if callable(action):
            try:
                action()
            except RaysweepError as err:
                error = err
        else:
            try:
                status = main(action)
            except SystemExit as exit_:
                status = exit_.code  # argparse's errors
    captured = capsys.readouterr()
    after = snapshot(tmp)
    written = {k: v for k, v in after.items() if before.get(k) != v}
    written.update({k: "removed" for k in before if k not in after})
    message = str(error) if error is not None else captured.err.strip()
    return Outcome(status, captured.err, captured.out, message, error,
                   [str(w.message) for w in caught], written)


def test_there_are_at_least_60_distinct_bad_inputs():
    ids = [case.id for case in CASES]
    assert len(set(ids)) == len(ids) >= 60
    assert {case.cls for case in CASES} >= {"spec", "spec file", "data", "weights", "storage",
                                           "report", "CLI argument", "API"}


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input_is_refused_in_one_line_and_writes_nothing(case: Case, tmp_path: Path,
                                                            monkeypatch, capsys):
    outcome = run_case(case, tmp_path, monkeypatch, capsys)
    assert outcome.written == {}, "a refused input wrote files"
    assert outcome.warnings == []
    assert "Traceback" not in outcome.stderr
    if outcome.status is None:  # an API case
        assert isinstance(outcome.error, case.error), outcome.error
        assert "\n" not in str(outcome.error)
        assert case.expect in str(outcome.error)
        return
    assert outcome.status == 2, outcome.stderr
    lines = outcome.stderr.splitlines()
    assert len(lines) == case.lines, lines
    assert all(line.startswith("error: ") for line in lines)
    assert case.expect in outcome.stderr, outcome.stderr


def test_malicious_weights_never_run_their_code(tmp_path: Path, monkeypatch, capsys):
    case = next(c for c in CASES if c.id == "weights-pickle")
    outcome = run_case(case, tmp_path, monkeypatch, capsys)
    assert outcome.status == 2
    assert not (tmp_path / "pwned").exists()
    assert "weights_only=False" not in outcome.stderr  # torch's advice would run the code


def test_the_good_spec_passes_validate_and_the_dry_run(tmp_path: Path, monkeypatch, capsys):
    """The control: the spec the cases break is itself fine (and checking writes nothing)."""
    good = Case("good", "", "", lambda tmp: ["validate", spec_file(tmp, base_spec(tmp))], "")
    outcome = run_case(good, tmp_path, monkeypatch, capsys)
    assert (outcome.status, outcome.stderr, outcome.written) == (0, "", {})
    dry = Case("dry", "", "", lambda tmp: ["run", spec_file(tmp, base_spec(tmp)), "--dry-run"],
               "")
    outcome = run_case(dry, tmp_path, monkeypatch, capsys)
    assert (outcome.status, outcome.stderr, outcome.written) == (0, "", {})


def test_debug_shows_the_traceback(tmp_path: Path, monkeypatch, capsys):
    spec = spec_file(tmp_path, changed(tmp_path, ("pretrain.0.alpha", -1)))
    assert main(["--debug", "validate", spec]) == 2
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "SpecProblems" in err
    assert err.splitlines()[-1].endswith("pretrain[0].alpha: must be >= 0, got -1.0")


# ------------------------------------------------------------------------------ the docs


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", "<br>")


def render_errors_page(rows: list[tuple[Case, str]]) -> str:
    lines = [
        "# Refused inputs and their messages",
        "",
        "Every bad input below is refused before anything is written or trained, with one line",
        "per problem on stderr (`error: ...`) and exit status 2; through the Python API it",
        "raises the `raysweep.errors` class named. `raysweep --debug ...` adds the traceback.",
        "A spec and the files it names are checked by `raysweep validate`, by",
        "`raysweep run --dry-run` and at the start of `run`, `pretrain`, `evaluate` and `search`.",
        "A failure inside a Ray Tune trial or Ray Train worker ends the command with one line too:",
        "the error's own text, the trial's name and its log (`error.txt`).",
        "",
        "This page is generated from the cases of `tests/test_bad_inputs.py`, with the test's",
        "folder shown as `<tmp>`; `RAYSWEEP_WRITE_DOCS=1 python -m pytest",
        "tests/test_bad_inputs.py -k errors_page` rewrites it, and that test fails when it is",
        "out of date.",
        "",
        "| class | bad input | message |",
        "| --- | --- | --- |",
    ]
    for case, message in rows:
        shown = message if case.error is RaysweepError else f"{case.error.__name__}: {message}"
        lines.append(f"| {case.cls} | {_cell(case.description)} | `{_cell(shown)}` |")
    return "\n".join(lines) + "\n"


def test_errors_page_is_up_to_date(tmp_path_factory, monkeypatch, capsys):
    rows = []
    for case in CASES:
        tmp = tmp_path_factory.mktemp(case.id)
        with monkeypatch.context() as patch:
            outcome = run_case(case, tmp, patch, capsys)
        message = outcome.message.replace(str(tmp), "<tmp>")
        rows.append((case, message))
    page = render_errors_page(rows)
    if os.environ.get("RAYSWEEP_WRITE_DOCS"):
        DOCS.parent.mkdir(parents=True, exist_ok=True)
        DOCS.write_text(page)
    assert DOCS.is_file() and DOCS.read_text() == page, (
        "docs/errors.md is out of date: RAYSWEEP_WRITE_DOCS=1 python -m pytest "
        "tests/test_bad_inputs.py -k errors_page")


def test_a_refused_command_leaves_the_home_folder_as_it_was(tmp_path: Path) -> None:
    """MLflow is imported with Ray Tune whenever it is installed, and on import it would fetch
    its telemetry configuration and write ``~/.config/mlflow/telemetry.json``: raysweep keeps
    that off (a user may turn it back on), so a refused command writes nothing in ``HOME``
    (matplotlib's font cache aside, a cache of the machine's fonts)."""
    import subprocess
    import sys

    home = tmp_path / "home"
    home.mkdir()
    bad = home / "spec.yaml"
    bad.write_text(yaml.safe_dump({**base_spec(tmp_path), "unknown_key": 1}))
    # Without the variables by which MLflow itself recognises a test or a CI machine.
    recognised = {"PYTEST_CURRENT_TEST", "CI", "GITHUB_ACTIONS", "GITLAB_CI", "JENKINS_URL",
                  "BUILDKITE", "TRAVIS", "CIRCLECI", "TF_BUILD"}
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("MLFLOW_", "DO_NOT_")) and k not in recognised}
    env["HOME"] = str(home)
    env["MPLCONFIGDIR"] = str(tmp_path / "mpl")
    done = subprocess.run([sys.executable, "-m", "raysweep.cli", "validate", str(bad)],
                          env=env, capture_output=True, text=True, check=False)
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert sorted(p.relative_to(home).as_posix() for p in home.rglob("*")) == ["spec.yaml"]
    subprocess.run([sys.executable, "-c", "import raysweep, mlflow"], env=env, check=True)
    assert sorted(p.relative_to(home).as_posix() for p in home.rglob("*")) == ["spec.yaml"]
    code = "import os, raysweep; print(os.environ['MLFLOW_DISABLE_TELEMETRY'])"
    chosen = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env={**env, "MLFLOW_DISABLE_TELEMETRY": "false"}, check=True)
    assert chosen.stdout.strip() == "false"
