"""The demo study and search are shipped specs (``search_spaces/demo.yaml``,
``search_spaces/demo_search.yaml``): runnable as they are, shipped in the package, and their
``--smoke`` variants change only the lengths of the runs."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import pytest

from raysweep.config import load_spec, non_default_fields, to_dict
from raysweep.experiment.demo import (
    demo_search_spec,
    demo_search_spec_dict,
    demo_spec,
    demo_spec_dict,
)

SEARCH_SPACES = Path(__file__).resolve().parents[2] / "search_spaces"


def test_every_study_of_search_spaces_is_shipped_in_the_package():
    shipped = resources.files("raysweep") / "search_spaces"
    names = sorted(p.name for p in SEARCH_SPACES.glob("*.yaml"))
    assert {"demo.yaml", "demo_search.yaml"} <= set(names)
    for name in names:
        assert (shipped / name).read_bytes() == (SEARCH_SPACES / name).read_bytes(), name


@pytest.mark.parametrize(("file", "build"), [("demo.yaml", demo_spec),
                                             ("demo_search.yaml", demo_search_spec)])
def test_the_demo_is_the_spec_file(file, build):
    """``raysweep demo`` runs what ``raysweep run search_spaces/<file>`` runs."""
    assert build() == load_spec(SEARCH_SPACES / file)
    assert build(storage="/somewhere/runs").storage == "/somewhere/runs"


def changes(before: dict, after: dict, prefix: str = "") -> dict[str, tuple]:
    """``{dotted.key: (before, after)}`` of every leaf that differs (lists by index)."""
    if isinstance(before, dict) and isinstance(after, dict):
        out = {}
        for key in before.keys() | after.keys():
            out.update(changes(before.get(key), after.get(key), f"{prefix}{key}."))
        return out
    if isinstance(before, list) and isinstance(after, list) and len(before) == len(after):
        out = {}
        for index, (one, two) in enumerate(zip(before, after, strict=True)):
            out.update(changes(one, two, f"{prefix}{index}."))
        return out
    return {} if before == after else {prefix[:-1]: (before, after)}


def test_smoke_variants_shorten_the_runs_only():
    assert changes(demo_spec_dict(), demo_spec_dict(smoke=True)) == {
        "name": ("demo", "demo-smoke"),
        "pretrain.0.epochs": (8, 1), "pretrain.1.epochs": (8, 1),
        "pretrain.2.epochs": (4, 1), "pretrain.3.epochs": (4, 1),
        "evaluate.settings.epochs": (20, 1), "evaluate.settings.lr_finder_iters": (50, 10),
    }
    assert changes(demo_search_spec_dict(), demo_search_spec_dict(smoke=True)) == {
        "name": ("demo-search", "demo-search-smoke"),
        "search.0.num_samples": (6, 4), "search.0.pretrain.epochs": (4, 2),
        "search.0.evaluate.seeds": (3, 2), "search.0.evaluate.settings.epochs": (20, 10),
        "search.0.evaluate.settings.lr_finder_iters": (50, 20),
    }
    # the resolved specs differ in the same places only
    full, smoke = to_dict(demo_spec()), to_dict(demo_spec(smoke=True))
    assert {k.split(".")[0] for k in changes(full, smoke)} == {"name", "pretrain", "evaluate"}


def test_the_demo_study_shape():
    """The paper's shape: SL and SSL initial encoders, their SSL_p further pre-training on the
    target, a random-init baseline fine-tuned only, 5 seeds, 100 labels."""
    spec = demo_spec()
    assert [(r.name, r.method, r.further, r.epochs) for r in spec.pretrain] == [
        ("SL", "supervised", False, 8), ("SSL", "barlow_twins", False, 8),
        ("SL-T-SSL_p", "barlow_twins", True, 4), ("SSL-T-SSL_p", "barlow_twins", True, 4)]
    stage = spec.evaluate
    assert (stage.seeds, stage.data.label_count, stage.protocols) == (
        5, 100, ("finetune", "probe", "logistic"))
    assert [(c.name, c.encoder.weights) for c in stage.encoders] == [
        ("SL", "pretrain:SL"), ("SSL", "pretrain:SSL"), ("SL-T-SSL_p", "pretrain:SL-T-SSL_p"),
        ("SSL-T-SSL_p", "pretrain:SSL-T-SSL_p"), ("random", "random")]
    assert ("report.bootstrap_resamples", 2000) in non_default_fields(spec)
