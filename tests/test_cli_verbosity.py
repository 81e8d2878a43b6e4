"""``--quiet`` / ``--verbose`` on the run-like commands, and what they set while a command runs."""

from __future__ import annotations

import os

import pytest

from raysweep import cli, console


@pytest.mark.parametrize("command", ["run S", "demo", "pretrain S", "evaluate S", "search S"])
@pytest.mark.parametrize(("flag", "level"), [("", 1), ("--quiet", 0), ("-q", 0),
                                             ("--verbose", 2), ("-v", 2)])
def test_run_like_commands_take_the_flags(command: str, flag: str, level: int) -> None:
    args = cli.build_parser().parse_args(command.split() + flag.split())
    assert args.verbosity == level


def test_quiet_and_verbose_exclude_each_other_and_other_commands_refuse_them(capsys) -> None:
    with pytest.raises(SystemExit) as both:
        cli.build_parser().parse_args(["run", "S", "--quiet", "--verbose"])
    assert both.value.code == 2
    with pytest.raises(SystemExit) as other:
        cli.build_parser().parse_args(["validate", "S", "--quiet"])
    assert other.value.code == 2
    assert "--quiet" in capsys.readouterr().err


def test_a_run_command_sets_verbosity_and_tune_settings_for_its_duration(monkeypatch) -> None:
    monkeypatch.delenv("TUNE_DISABLE_SIGINT_HANDLER", raising=False)
    monkeypatch.delenv("RAY_AIR_NEW_OUTPUT", raising=False)
    seen = {}

    def handler(args) -> int:
        seen.update(verbosity=console.verbosity(),
                    sigint=os.environ.get("TUNE_DISABLE_SIGINT_HANDLER"),
                    output=os.environ.get("RAY_AIR_NEW_OUTPUT"))
        return 0

    monkeypatch.setattr(cli, "_cmd_demo", handler)
    assert cli.main(["demo", "--quiet"]) == 0
    assert seen == {"verbosity": console.QUIET, "sigint": "1", "output": "0"}
    assert cli.main(["demo", "--verbose"]) == 0
    assert seen == {"verbosity": console.VERBOSE, "sigint": "1", "output": None}
    # Afterwards the process is as it was.
    assert console.verbosity() == console.NORMAL
    assert "TUNE_DISABLE_SIGINT_HANDLER" not in os.environ


def test_ctrl_c_stops_ray_and_says_what_is_kept_and_how_to_resume(tmp_path, monkeypatch,
                                                                   capsys) -> None:
    import signal

    import yaml

    from raysweep.runtime import ray_session

    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump({"name": "exp", "storage": str(tmp_path / "runs"),
                                    "evaluate": {"data": {"sources": [{"kind": "digits"}]},
                                                 "seeds": 3, "protocols": ["finetune"],
                                                 "encoders": [{"name": "rand"}]}}))
    stopped = []
    monkeypatch.setattr(ray_session, "stop_ray", lambda: stopped.append(True))

    def ctrl_c(args) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "_cmd_run", ctrl_c)
    handler = signal.getsignal(signal.SIGINT)
    assert cli.main(["run", str(spec), "--quiet"]) == cli.EXIT_INTERRUPTED
    assert stopped == [True]
    assert signal.getsignal(signal.SIGINT) is handler
    assert capsys.readouterr().err.splitlines() == [
        "interrupted: stopping Ray ...",
        f"kept in {tmp_path / 'runs' / 'exp'}:",
        "  evaluate: 0 of 3 result rows kept (one per finished seed; they are not computed "
        "again)",
        f"resume with: raysweep run {spec} --quiet",
    ]
