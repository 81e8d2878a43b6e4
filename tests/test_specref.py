"""docs/spec-reference.md: generated from the spec classes, complete, and up to date."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

from raysweep import config, specref

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT / "docs" / "spec-reference.md"


def test_committed_reference_is_up_to_date() -> None:
    committed = REFERENCE.read_text(encoding="utf-8") if REFERENCE.is_file() else ""
    assert committed == specref.render(), (
        f"docs/spec-reference.md is out of date with raysweep/config/; run: "
        f"{specref.REGENERATE}")


def test_the_module_prints_the_reference() -> None:
    out = subprocess.run([sys.executable, "-m", "raysweep.specref"], cwd=ROOT, text=True,
                         capture_output=True, check=True).stdout
    assert out == specref.render()


def _all_spec_classes(base: type = config.Spec) -> set[type]:
    found = set()
    for sub in base.__subclasses__():
        if sub.__module__.startswith(config.__name__ + "."):
            found.add(sub)
        found |= _all_spec_classes(sub)
    return found


def test_every_field_of_every_spec_class_has_a_row() -> None:
    text = specref.render()
    classes = specref.spec_classes()
    assert set(classes) == _all_spec_classes()
    for cls, paths in classes.items():
        assert f"\n## {cls.__name__}\n" in text
        prefix = paths[0] + "." if paths and paths[0] else ""
        for f in dataclasses.fields(cls):
            assert f"| `{prefix}{f.name}` |" in text, f"{cls.__name__}.{f.name}"


def test_rows_show_type_default_range_and_doc() -> None:
    rows = {line.split(" | ")[0]: line for line in specref.render().splitlines()
            if line.startswith("| `")}
    assert rows["| `pretrain[].lambda_offdiag`"] == (
        "| `pretrain[].lambda_offdiag` | `float` | `0.0001220703125` | >= 0 "
        "| Barlow Twins off-diagonal weight (eq. 1) |")
    assert rows["| `pretrain[].name`"].split(" | ")[2] == "**required**"
    assert rows["| `evaluate.settings.strength`"].split(" | ")[3] == "in [0.0, 2.0]"
    assert rows["| `report.correction`"].split(" | ")[1:4] == [
        "`str`", "`holm`", "one of holm, fdr_bh, bonferroni, none"]
    assert "one of finetune, probe, logistic; not empty" in rows["| `evaluate.encoders[].protocols`"]
    assert ("barlow_twins, simclr, simclr_medical, simclr_short, simclr_grey, supervised, "
            "supervised_upright") in rows[
        "| `pretrain[].augmentation`"]


def test_checks_are_described_from_their_own_words() -> None:
    def odd(value):
        return None if value is None or value % 2 else f"must be odd, got {value!r}"

    def documented(value):
        """a prime number"""
        return None

    assert specref.describe_check(odd) == "odd"
    assert specref.describe_check(documented) == "a prime number"
    assert specref.describe_check(config._between(-1.0, 1.0)) == "in [-1.0, 1.0]"
