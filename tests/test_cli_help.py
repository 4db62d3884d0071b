"""The command's start-up and help: `vitkit --help` answers without importing torch (lazy imports), every
subcommand's stub names the module that registers it, and help text is written for the command line."""

from __future__ import annotations

import argparse
import re
import subprocess
import sys

import pytest

import vitkit
from _cli import run_cli
from vitkit.cli import COMMANDS, build_parser

PROBE = ("import sys\nfrom vitkit.cli import main\ntry:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
         "print('torch' in sys.modules)")


@pytest.mark.parametrize("argv", [["--help"], ["--version"], ["predcit"]])
def test_help_version_and_typos_do_not_import_torch(argv):
    out = subprocess.run([sys.executable, "-c", PROBE, *argv], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip().splitlines()[-1] == "False", out.stdout + out.stderr


EVERY_HELP = ("import contextlib, io, sys\nfrom vitkit.cli import COMMANDS, main\nfor name in COMMANDS:\n"
              "    out = io.StringIO()\n    with contextlib.redirect_stdout(out):\n        try:\n"
              "            main([name, '--help'])\n        except SystemExit:\n            pass\n"
              "    assert out.getvalue().startswith('usage: vitkit ' + name), (name, out.getvalue()[:200])\n"
              "print(sorted(m for m in ('torch', 'numpy', 'PIL') if m in sys.modules))")


def test_every_subcommands_help_answers_without_importing_torch():
    """`vitkit predict --help` took 1.6-1.9 s importing torch for its flags' choices (vitkit.choices now)."""
    out = subprocess.run([sys.executable, "-c", EVERY_HELP], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout[-500:]


def test_the_package_imports_lazily_and_gives_the_same_objects():
    code = "import sys, vitkit; print('torch' in sys.modules, vitkit.__version__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.split()[0] == "False"
    import vitkit.predict as predict_module  # noqa: F401  (binds the submodule on the package)
    from vitkit.predict import predict
    from vitkit.registry import create_model

    assert vitkit.predict is predict and vitkit.create_model is create_model  # the function, not the module
    assert set(vitkit.__all__) <= set(dir(vitkit))
    for name in vitkit.__all__:
        assert getattr(vitkit, name) is not None
    assert vitkit.attention.METHODS  # submodules as attributes, as before
    with pytest.raises(AttributeError):
        vitkit.no_such_name  # noqa: B018


def test_stubs_name_the_module_that_registers_each_command():
    full = build_parser()
    sub = next(a for a in full._actions if isinstance(a, argparse._SubParsersAction))
    assert list(sub.choices) == list(COMMANDS)  # same commands, same order
    for name, (module, _) in COMMANDS.items():
        lazy = build_parser(name, lazy=True)
        action = next(a for a in lazy._actions if isinstance(a, argparse._SubParsersAction))
        assert action.choices[name].get_default("func") is not None, name
        assert action.choices[name].get_default("func").__module__ == f"vitkit.cli.{module}"


def test_help_is_written_for_the_command_line():
    res = run_cli("--help")
    assert res.returncode == 0 and "predict" in res.stdout and "features" in res.stdout
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name in ("predict", "features", "inspect", "attention", "models", "export", "optimize"):
        text = sub.choices[name].format_help()
        assert "``" not in text and "=True" not in text, (name, text)  # no docstring markup, no Python calls
        flags = set(re.findall(r"(?<![\w-])--[a-z][a-z-]+", text))
        known = {s for a in sub.choices[name]._actions for s in a.option_strings}
        assert flags <= known | {"--help"}, (name, flags - known)  # help names only options the command has
