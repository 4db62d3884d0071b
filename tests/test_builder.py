"""One builder: every door hands back a VisionTransformer whose declared metadata (pretrained_cfg, model_name,
load_report) the builder set, and nothing else in the library constructs one or reads that metadata by guess."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
import torch

import vitkit
from vitkit import VisionTransformer, ViTConfig
from vitkit.config import PretrainedCfg
from vitkit.model import name_of, pretrained_cfg_of_model
from vitkit.training.setup import build_model
from vitkit.weights import LoadReport, build

SRC = Path(vitkit.__file__).parent
TINY = ViTConfig(img_size=16, patch_size=8, embed_dim=32, depth=1, num_heads=2, num_classes=3)


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return vitkit.save_pretrained(vitkit.create_model("vit_digits"), tmp_path_factory.mktemp("b") / "digits")


def test_a_bare_model_declares_what_it_does_not_know() -> None:
    model = VisionTransformer(TINY)
    assert model.pretrained_cfg is None and model.model_name is None and model.load_report is None
    assert name_of(model) == "VisionTransformer" and pretrained_cfg_of_model(model) is None
    assert vitkit.summarize(model).model_name == "VisionTransformer"


def test_create_model_builds_fresh_with_the_registry_metadata() -> None:
    model = vitkit.create_model("vit_digits", num_classes=4)
    assert model.model_name == "vit_digits" and model.load_report is None
    assert isinstance(model.pretrained_cfg, PretrainedCfg) and model.pretrained_cfg.num_classes == 4
    assert model.training  # fresh, as nn.Module is built


def test_create_model_with_weights_reports_the_load(saved: Path) -> None:
    model = vitkit.create_model("vit_digits", pretrained=saved / "model.safetensors")
    assert model.model_name == "vit_digits" and not model.training
    assert isinstance(model.load_report, LoadReport) and model.load_report.ok
    assert model.load_report.source.endswith("model.safetensors")


@pytest.mark.parametrize("door", ["from_pretrained", "load_model", "resolve_model"])
def test_every_source_door_sets_the_metadata(saved: Path, door: str) -> None:
    model = getattr(vitkit.runtime, door)(str(saved))
    assert isinstance(model, VisionTransformer)
    assert model.model_name == "vit_digits"  # the name the folder was saved under
    assert model.pretrained_cfg == vitkit.create_model("vit_digits").pretrained_cfg
    assert isinstance(model.load_report, LoadReport) and Path(model.load_report.source) == saved


def test_training_builds_a_json_architecture_through_the_builder(tmp_path: Path) -> None:
    spec = tmp_path / "tiny_arch.json"
    spec.write_text(json.dumps(TINY.to_dict()))
    model = build_model(str(spec), num_classes=5)
    assert model.model_name == "tiny_arch" and model.load_report is None
    assert model.pretrained_cfg.num_classes == 5 and tuple(model.pretrained_cfg.input_size) == (3, 16, 16)


def test_the_builder_loads_into_the_requested_dtype_and_keeps_a_fresh_model_in_training_mode() -> None:
    fresh = build(TINY, model_name="x", dtype=torch.bfloat16)
    assert fresh.training and fresh.pos_embed.dtype == torch.bfloat16 and fresh.model_name == "x"
    assert fresh.pretrained_cfg is None and fresh.load_report is None


def _calls(tree: ast.AST, name: str) -> list[int]:
    return [node.lineno for node in ast.walk(tree) if isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name) and node.func.id == name]


def test_only_the_builder_constructs_a_vision_transformer() -> None:
    """``VisionTransformer(...)`` appears in the builder (weights/load.py) and inside the image-text model (its
    image tower); every other model comes from ``vitkit.weights.build``."""
    allowed = {"weights/load.py", "imagetext.py"}
    found = {str(p.relative_to(SRC)): _calls(ast.parse(p.read_text()), "VisionTransformer")
             for p in SRC.rglob("*.py")}
    assert {f for f, lines in found.items() if lines} <= allowed, {f: v for f, v in found.items() if v}
    assert found["weights/load.py"]


def test_the_declared_metadata_is_not_read_by_guess() -> None:
    """No ``getattr(model, "pretrained_cfg" | "model_name" | "load_report", default)`` outside model.py, whose
    two accessors are the one home of the fallback for modules that are not vitkit's."""
    bad = []
    for path in SRC.rglob("*.py"):
        if path.name == "model.py" and path.parent == SRC:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("getattr",
                                                                                                    "hasattr") \
                    and len(node.args) >= 2 and isinstance(node.args[1], ast.Constant) \
                    and node.args[1].value in ("pretrained_cfg", "model_name", "load_report"):
                bad.append(f"{path.relative_to(SRC)}:{node.lineno}")
    assert not bad, bad
