"""`dcomp` (`perf.cli`): usage, unknown commands, dispatch to each subcommand's own parser."""

import importlib

import pytest

from perf import cli


@pytest.mark.parametrize("argv", [[], ["-h"], ["--help"]])
def test_usage_lists_every_command(argv, capsys):
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: dcomp COMMAND [options]")
    for name, (_, _, help_) in cli.SUBCOMMANDS.items():
        assert f"  {name:<14} {help_}" in out


def test_unknown_command_exits_2(capsys):
    assert cli.main(["compres", "--help"]) == 2
    err = capsys.readouterr().err
    assert "dcomp: unknown command 'compres'" in err and "usage: dcomp COMMAND" in err


@pytest.mark.parametrize("name", ["demo", "report", "run"])
def test_dispatch_to_the_subcommands_help(name, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main([name, "--help"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.startswith("usage: ")


def test_the_demo_subcommand_is_perf_demo(capsys):
    with pytest.raises(SystemExit):
        cli.main(["demo", "--help"])
    out = capsys.readouterr().out
    assert out.startswith("usage: dcomp demo") and "--epochs-scale" in out


def test_every_subcommand_resolves_to_a_function():
    for module_name, function, _ in cli.SUBCOMMANDS.values():
        assert callable(getattr(importlib.import_module(module_name), function)), module_name


def test_a_missing_subcommand_module_is_reported(monkeypatch, capsys):
    monkeypatch.setitem(cli.SUBCOMMANDS, "gone", ("perf.no_such_module", "main", "a removed command"))
    assert cli.main(["gone"]) == 2
    err = capsys.readouterr().err
    assert "dcomp gone: not available in this version (perf.no_such_module is missing)" in err


def test_arguments_reach_the_subcommand(monkeypatch):
    seen = []
    monkeypatch.setattr("perf.demo.main", lambda argv: seen.append(argv) or 3)
    assert cli.main(["demo", "--seeds", "2"]) == 3
    assert seen == [["--seeds", "2"]]
