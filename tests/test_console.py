"""Console verbosity and the duration format of progress lines."""

from __future__ import annotations

import pytest

from raysweep import console


@pytest.fixture(autouse=True)
def normal_verbosity():
    yield
    console.set_verbosity(console.NORMAL)


@pytest.mark.parametrize(("seconds", "text"), [
    (0, "0 s"), (0.4, "0 s"), (41.6, "42 s"), (59.6, "1 min 00 s"), (185, "3 min 05 s"),
    (3599.4, "59 min 59 s"), (7620, "2 h 07 min"), (-3, "0 s"),
])
def test_format_duration(seconds: float, text: str) -> None:
    assert console.format_duration(seconds) == text


@pytest.mark.parametrize(("level", "shown"), [
    (console.QUIET, []), (console.NORMAL, ["line"]), (console.VERBOSE, ["line", "detail"]),
])
def test_verbosity_chooses_what_is_printed(level: int, shown: list[str], capsys) -> None:
    console.set_verbosity(level)
    assert console.verbosity() == level
    console.say("line")
    console.detail("detail")
    captured = capsys.readouterr()
    assert captured.err.splitlines() == shown
    assert captured.out == ""


def test_tune_and_ray_levels_follow_the_verbosity(monkeypatch) -> None:
    monkeypatch.delenv("RAYSWEEP_RAY_LOG_LEVEL", raising=False)
    console.set_verbosity(console.NORMAL)
    assert (console.tune_verbosity(), console.ray_log_level()) == (0, "WARNING")
    console.set_verbosity(console.VERBOSE)
    assert (console.tune_verbosity(), console.ray_log_level()) == (1, "INFO")
    monkeypatch.setenv("RAYSWEEP_RAY_LOG_LEVEL", "ERROR")
    assert console.ray_log_level() == "ERROR"


def test_unknown_verbosity_is_refused() -> None:
    with pytest.raises(ValueError, match="verbosity"):
        console.set_verbosity(5)


def test_plural() -> None:
    assert [console.plural(n, "epoch") for n in (0, 1, 2)] == ["0 epochs", "1 epoch", "2 epochs"]
