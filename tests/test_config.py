"""Spec validation: unknown keys, wrong types and out-of-range values are one-line errors that
name the file and the key path (docs/design.md principle 4)."""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

import pytest
import yaml

from raysweep.config import (
    DatasetSpec,
    EvaluationSpec,
    ExperimentSpec,
    PretrainSpec,
    SourceSpec,
    dump_spec,
    load_spec,
    spec_from_data,
)
from raysweep.errors import SpecError

DIGITS = {"sources": [{"kind": "digits"}], "image_size": 16}


def minimal(**extra) -> dict:
    data = copy.deepcopy({
        "name": "exp",
        "pretrain": [{"name": "bt", "data": copy.deepcopy(DIGITS), "encoder": {"name": "small_resnet"}}],
        "evaluate": {"data": DIGITS, "encoders": [{"name": "bt", "encoder": {
            "name": "small_resnet", "weights": "pretrain:bt"}}]},
    })
    data.update(extra)
    return data


def error_of(data: dict) -> str:
    with pytest.raises(SpecError) as info:
        spec_from_data(data, "spec.yaml")
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("spec.yaml: ")
    return message


def test_minimal_spec_gets_the_papers_defaults():
    spec = spec_from_data(minimal())
    run = spec.pretrain[0]
    assert run.lambda_offdiag == pytest.approx(1 / 8192)
    assert run.alpha == 0.01 and run.batch_size == 128 and run.weight_decay == 1.5e-6
    assert run.projector == (8192, 8192, 8192)
    assert spec.evaluate.seeds == 35
    settings = spec.evaluate.settings
    assert (settings.epochs, settings.batch_size, settings.pct_start, settings.div_factor,
            settings.final_div_factor, settings.tta_views) == (40, 64, 0.25, 25.0, 1e5, 3)
    assert (settings.max_momentum, settings.base_momentum, settings.weight_decay) == (0.95, 0.85, 0.0)


def test_specs_are_frozen():
    spec = spec_from_data(minimal())
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.name = "other"  # type: ignore[misc]


def test_unknown_key_names_path_and_closest_key():
    data = minimal()
    data["pretrain"][0]["lamda_offdiag"] = 0.1
    assert error_of(data) == ("spec.yaml: pretrain[0].lamda_offdiag: unknown key "
                              "(did you mean 'lambda_offdiag'?)")


def test_unknown_top_level_key():
    assert "did you mean 'evaluate'" in error_of(minimal(evaluat={}))


@pytest.mark.parametrize(("path", "value", "expected"), [
    (("pretrain", 0, "lambda_offdiag"), -0.5, "pretrain[0].lambda_offdiag: must be >= 0"),
    (("pretrain", 0, "alpha"), -1, "pretrain[0].alpha: must be >= 0"),
    (("pretrain", 0, "batch_size"), "big", "pretrain[0].batch_size: expected an integer"),
    (("pretrain", 0, "strength"), 2.5, "pretrain[0].strength: must be in [0.0, 2.0]"),
    (("evaluate", "seeds"), 0, "evaluate.seeds: must be in [1, 10000], got 0"),
    (("evaluate", "data", "label_fraction"), 0, "evaluate.data.label_fraction: must be in (0, 1]"),
    (("evaluate", "data", "label_fraction"), 1.2, "evaluate.data.label_fraction: must be in (0, 1]"),
    (("evaluate", "settings", "tta_views"), 1.5, "evaluate.settings.tta_views: expected an integer"),
    (("evaluate", "settings", "bn_in_head_epoch"), "train",
     "evaluate.settings.bn_in_head_epoch: must be one of 'trainable', 'frozen', got 'train' "
     "(did you mean 'trainable'?)"),
    (("pretrain", 0, "deterministic"), "yes", "pretrain[0].deterministic: expected true or false"),
])
def test_wrong_types_and_ranges(path, value, expected):
    data = minimal()
    target = data
    for part in path[:-1]:
        target = target[part] if isinstance(part, int) else target.setdefault(part, {})
    target[path[-1]] = value
    assert expected in error_of(data)


def test_numbers_from_yaml_strings_and_fractions():
    # PyYAML reads 1e-3 as a string; the paper writes lambda as 1/8192.
    data = yaml.safe_load("""
name: exp
pretrain:
  - name: bt
    data: {sources: [{kind: digits}]}
    lambda_offdiag: 1/8192
    lr_max: 1e-3
""")
    run = spec_from_data(data).pretrain[0]
    assert run.lambda_offdiag == 1 / 8192
    assert run.lr_max == 1e-3


def test_dangling_pretrain_reference():
    data = minimal()
    data["evaluate"]["encoders"][0]["encoder"]["weights"] = "pretrain:tb"
    assert error_of(data).endswith("no pretrain run named 'tb' (did you mean 'bt'?)")


def test_unknown_weight_source():
    data = minimal()
    data["evaluate"]["encoders"][0]["encoder"]["weights"] = "imagenet"
    assert "evaluate.encoders[0].encoder.weights: unknown weight source 'imagenet'" in error_of(data)


def test_condition_overrides_are_validated():
    data = minimal()
    data["evaluate"]["encoders"][0]["overrides"] = {"epochs": -3}
    assert "evaluate.encoders[0].overrides.epochs: must be > 0" in error_of(data)


def test_product_grid_expands_with_condition_keys():
    data = {
        "name": "grid",
        "pretrain": {
            "base": {"data": DIGITS, "encoder": {"name": "small_resnet"}, "trainable": "last_block"},
            "product": {
                "initial": {"SL": {"encoder.weights": "random"}, "SSL": {"encoder.weights": "vicreg"}},
                "further_data": {"I": None, "IU": {"data.split_seed": 3}},
            },
        },
    }
    spec = spec_from_data(data)
    assert [run.name for run in spec.pretrain] == ["SL-I", "SL-IU", "SSL-I", "SSL-IU"]
    assert dict(spec.pretrain[3].keys) == {"initial": "SSL", "further_data": "IU"}
    assert spec.pretrain[3].encoder.weights == "vicreg"
    assert spec.pretrain[3].data.split_seed == 3 and spec.pretrain[2].data.split_seed == 0
    assert all(run.trainable == "last_block" for run in spec.pretrain)


def test_round_trip_through_yaml():
    spec = spec_from_data(minimal())
    again = spec_from_data(yaml.safe_load(dump_spec(spec)))
    assert again == spec


def test_python_construction_is_validated_too():
    with pytest.raises(SpecError, match="lambda_offdiag: must be >= 0"):
        PretrainSpec(name="x", data=DatasetSpec(sources=(SourceSpec(kind="digits"),)),
                     lambda_offdiag=-1.0)
    with pytest.raises(SpecError, match="path: required for a folder source"):
        SourceSpec(kind="folder")
    assert EvaluationSpec().replace(epochs=80).epochs == 80


def test_load_spec_errors_name_the_file(tmp_path: Path):
    missing = tmp_path / "nope.yaml"
    with pytest.raises(SpecError, match=f"{missing}: spec file not found"):
        load_spec(missing)
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: [unclosed\n")
    with pytest.raises(SpecError, match=r"broken.yaml: invalid YAML at line \d+"):
        load_spec(broken)
    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump(minimal()))
    assert isinstance(load_spec(good), ExperimentSpec)


def test_yaml_python_tags_are_refused(tmp_path: Path):
    evil = tmp_path / "evil.yaml"
    evil.write_text("name: !!python/object/apply:os.system ['echo hi']\n")
    with pytest.raises(SpecError, match="invalid YAML"):
        load_spec(evil)


def test_specs_pickle_for_ray_workers():
    import pickle

    data = minimal()
    data["pretrain"][0]["resources_per_worker"] = {"CPU": 1}
    spec = spec_from_data(data)
    assert pickle.loads(pickle.dumps(spec)) == spec
    with pytest.raises(TypeError, match="read-only"):
        spec.pretrain[0].resources_per_worker["CPU"] = 2


def test_extra_runs_start_from_the_grids_base():
    """A grid's `extra:` run states only how it differs from `base:` (nested keys merge)."""
    data = {
        "name": "grid",
        "pretrain": {
            "base": {"data": DIGITS, "encoder": {"name": "small_resnet"}, "projector": [512, 512],
                     "lr_max": 2e-3, "keys": {"study": "s1"}},
            "product": {"initial": {"R": {"encoder.weights": "random"}}},
            "extra": [{"name": "whole", "encoder": {"weights": "vicreg"}, "epochs": 7,
                       "keys": {"initial": "V"}},
                      {"name": "dotted", "data.split_seed": 4}],
        },
    }
    spec = spec_from_data(data)
    whole, dotted = spec.pretrain[1], spec.pretrain[2]
    assert (whole.projector, whole.lr_max, whole.epochs) == ((512, 512), 2e-3, 7)
    assert (whole.encoder.name, whole.encoder.weights) == ("small_resnet", "vicreg")
    assert dict(whole.keys) == {"study": "s1", "initial": "V"}
    assert dotted.data.split_seed == 4 and dotted.data.image_size == 16
    assert dotted.projector == (512, 512)
    # the shipped paper spec: its extra runs keep the base's 100 epochs of Barlow Twins
    isic = load_spec(Path(__file__).resolve().parents[1] / "search_spaces" / "paper_isic.yaml")
    extra = [r for r in isic.pretrain if r.name.endswith("-SSL")]
    assert len(extra) == 2 and all(r.frozen_lr == 1e-3 and r.epochs == 100 for r in extra)


def test_every_problem_of_a_spec_is_reported_at_once():
    from raysweep.errors import SpecProblems

    data = minimal()
    data["pretrain"][0]["alpha"] = -1
    data["pretrain"][0]["lamda_offdiag"] = 1
    data["evaluate"]["seeds"] = 0
    with pytest.raises(SpecProblems) as info:
        spec_from_data(data, "s.yaml")
    assert info.value.problems == (
        "s.yaml: pretrain[0].lamda_offdiag: unknown key (did you mean 'lambda_offdiag'?)",
        "s.yaml: pretrain[0].alpha: must be >= 0, got -1.0",
        "s.yaml: evaluate.seeds: must be in [1, 10000], got 0")
    assert str(info.value).startswith("3 problems: s.yaml: pretrain[0].lamda_offdiag")


def test_duplicate_keys_are_refused_but_merge_keys_may_override():
    from raysweep.config import parse_yaml

    assert parse_yaml("a: &x {b: 1, c: 2}\nd:\n  <<: *x\n  c: 3\n") == {
        "a": {"b": 1, "c": 2}, "d": {"b": 1, "c": 3}}
    with pytest.raises(yaml.YAMLError, match="duplicate key 'b'"):
        parse_yaml("d: {b: 1, b: 2}\n")


def test_name_templates_format_axes_only():
    data = {"name": "g", "pretrain": {
        "base": {"data": DIGITS}, "name": "{initial}_on_{data}",
        "product": {"initial": {"SL": None}, "data": {"I": None, "IU": None}}}}
    assert [r.name for r in spec_from_data(data).pretrain] == ["SL_on_I", "SL_on_IU"]
    data["pretrain"]["name"] = "{data[0]}"
    assert "unknown field {data[0]}" in error_of(data)
