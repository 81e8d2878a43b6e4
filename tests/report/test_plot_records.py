"""The per-row JSON records the report plots read (:mod:`raysweep.report.plots`): a readable
record comes back as stored, anything else as None, never an exception."""

from __future__ import annotations

import json
import math

import pytest

from raysweep.report.plots import parse_lr_finder, parse_val_curve

LR_RECORD = {"lrs": [1e-4, 1e-3, 1e-2], "losses": [2.3, 1.9, 2.8], "suggestion": 1e-3}
VAL_CURVE = [{"epoch": 0, "accuracy": 0.5}, {"epoch": 1, "accuracy": 0.75}]


def test_an_lr_finder_record_is_read_from_json_or_a_mapping() -> None:
    assert parse_lr_finder(json.dumps(LR_RECORD)) == LR_RECORD
    assert parse_lr_finder(json.dumps(LR_RECORD).encode()) == LR_RECORD
    assert parse_lr_finder(LR_RECORD) == LR_RECORD


@pytest.mark.parametrize("value", [
    None, math.nan, 3, "{not json", json.dumps({"lrs": [], "losses": [1.0]}),
    # JSON that is not an object
    "null", "[1, 2]", '"text"', "7",
])
def test_an_unreadable_lr_finder_record_is_none(value: object) -> None:
    assert parse_lr_finder(value) is None


def test_a_validation_curve_is_read_from_json_or_a_list() -> None:
    assert parse_val_curve(json.dumps(VAL_CURVE)) == VAL_CURVE
    assert parse_val_curve(VAL_CURVE) == VAL_CURVE
    assert parse_val_curve([*VAL_CURVE, {"accuracy": 1.0}, "x"]) == VAL_CURVE


@pytest.mark.parametrize("value", [
    None, math.nan, "{not json", "[]", json.dumps([{"accuracy": 1.0}]),
    # JSON that is not a list
    "null", "5", json.dumps({"epoch": 0}),
])
def test_an_unreadable_validation_curve_is_none(value: object) -> None:
    assert parse_val_curve(value) is None
