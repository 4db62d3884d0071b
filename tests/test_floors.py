"""The architecture's contract: imports only point down the floors, and the import graph has no cycle."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parents[1]


def test_import_graph_of_vitkit_has_no_cycle():
    graph = grimp.build_graph("vitkit")
    cycles = sorted((a, b) for a in graph.modules for b in graph.find_modules_directly_imported_by(a)
                    if a != "vitkit" and graph.chain_exists(importer=b, imported=a))
    assert not cycles, f"import cycles (module imports a module that leads back to it): {cycles}"


def test_layers_contract_is_kept():
    """`lint-imports` (import-linter, configured in pyproject.toml) keeps the floors and bans timm/torchvision."""
    lint = Path(sys.executable).with_name("lint-imports")
    out = subprocess.run([str(lint)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    assert "one-way floors KEPT" in out.stdout


def test_layers_contract_catches_an_upward_import(tmp_path):
    """The contract is not vacuous: a model module that imports the registry (a higher floor) breaks it."""
    import shutil

    copy = tmp_path / "repo"
    shutil.copytree(ROOT / "src", copy / "src")
    shutil.copy(ROOT / "pyproject.toml", copy / "pyproject.toml")
    model = copy / "src" / "vitkit" / "model.py"
    model.write_text(model.read_text() + "\nfrom .registry import list_models  # noqa: E402,F401\n")
    lint = Path(sys.executable).with_name("lint-imports")
    env = {"PYTHONPATH": str(copy / "src"), "PATH": str(Path(sys.executable).parent)}
    out = subprocess.run([str(lint)], cwd=copy, capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode != 0 and "one-way floors BROKEN" in out.stdout
    assert "vitkit.model -> vitkit.registry" in out.stdout
