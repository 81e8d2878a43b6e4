"""``raysweep report --from-stats``: the authors' computation from published means and stds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps
from statsmodels.stats.multitest import multipletests

from raysweep.cli import main
from raysweep.errors import DataError
from raysweep.report import report_from_stats

# docs/protocol.md's test vector, and the paper's Table 6 (linear probe) accuracies.
VECTOR = "model,mean,std,n\nSSL+I+SSL_p,0.69112,0.011,35\nSSL,0.65701,0.021,35\n"
TABLE_6 = """model,metric,mean,std,n
SL,accuracy,0.59281,0.01097,35
SSL,accuracy,0.66278,0.00686,35
SL+I+SSL_p,accuracy,0.67588,0.00582,35
SSL+I+SSL_p,accuracy,0.69403,0.00404,35
SL,f1_weighted,0.61513,0.00817,35
SSL,f1_weighted,0.66752,0.00503,35
SL+I+SSL_p,f1_weighted,0.68170,0.00476,35
SSL+I+SSL_p,f1_weighted,0.69671,0.00365,35
"""


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_protocol_test_vector_via_cli(tmp_path: Path, capsys) -> None:
    table = _write(tmp_path / "stats.csv", VECTOR)
    comparisons = _write(tmp_path / "comparisons.csv",
                         "model_1,model_2,alternative\nSSL+I+SSL_p,SSL,greater\n")
    out = tmp_path / "tests.csv"
    assert main(["report", "--from-stats", str(table), "--comparisons", str(comparisons),
                     "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "1.0986e-11" in printed and "Model 1 ≤ Model 2" in printed
    written = pd.read_csv(out)
    assert f"{written.p_value[0]:.4e}" == "1.0986e-11"
    assert written.null[0] == "Model 1 <= Model 2"


def test_all_pairs_two_sided_per_metric_with_holm(tmp_path: Path) -> None:
    tests = report_from_stats(_write(tmp_path / "t6.csv", TABLE_6))
    assert len(tests) == 2 * 6 and set(tests.alternative) == {"two-sided"}
    table = pd.read_csv(tmp_path / "t6.csv").set_index(["metric", "model"])
    for metric, part in tests.groupby("metric"):
        expected = [
            sps.ttest_ind_from_stats(*table.loc[(metric, m1)][["mean", "std", "n"]],
                                     *table.loc[(metric, m2)][["mean", "std", "n"]],
                                     equal_var=False).pvalue
            for m1, m2 in zip(part.model_1, part.model_2, strict=True)
        ]
        np.testing.assert_allclose(part.p_value, expected, rtol=1e-12)
        np.testing.assert_allclose(part.p_adjusted, multipletests(expected, method="holm")[1])


def test_declared_comparisons_default_to_the_one_sided_null(tmp_path: Path) -> None:
    tests = report_from_stats(_write(tmp_path / "t6.csv", TABLE_6),
                              comparisons=_write(tmp_path / "c.csv", "model_1,model_2\nSSL,SL\n"))
    assert list(tests.metric) == ["accuracy", "f1_weighted"]
    assert set(tests.null) == {"Model 1 <= Model 2"}
    assert (tests.p_value < 1e-10).all()  # the paper's Table 14, row 1: p < 1e-10
    # Cohen's d from the summaries: (0.66278 - 0.59281) / pooled sd
    pooled = np.sqrt((0.00686**2 + 0.01097**2) / 2)
    assert tests.cohens_d[0] == pytest.approx((0.66278 - 0.59281) / pooled, rel=1e-9)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("model,mean,n\nA,0.5,35\n", "std"),
        ("model,mean,std,n\nA,0.5,0.1,35\nB,0.4,-0.1,35\n", "line 3"),
        ("model,mean,std,n\nA,0.5,0.1,1\n", "n 1"),
        ("model,mean,std,n\nA,0.5,0.1,35\nA,0.4,0.1,35\n", "twice"),
        ("model,mean,std,n\nA,x,0.1,35\n", "line 2"),
    ],
)
def test_bad_tables_name_the_fault(tmp_path: Path, text: str, match: str) -> None:
    with pytest.raises(DataError, match=match):
        report_from_stats(_write(tmp_path / "bad.csv", text))


def test_bad_inputs_exit_2_and_write_nothing(tmp_path: Path, capsys) -> None:
    table = _write(tmp_path / "stats.csv", VECTOR)
    out = tmp_path / "tests.csv"
    bad = _write(tmp_path / "c.csv", "model_1,model_2\nSSL,nobody\n")
    assert main(["report", "--from-stats", str(table), "--comparisons", str(bad),
                     "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "'nobody'" in err and len(err.splitlines()) == 1
    assert not out.exists()
    assert main(["report", "--from-stats", str(tmp_path / "missing.csv")]) == 2
    assert "missing.csv" in capsys.readouterr().err
    assert main(["report"]) == 2
