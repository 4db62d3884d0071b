"""The project's .venv imports the test-only references as a user would, with no workaround in the process."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_timm_and_transformers_image_classes_import_in_a_fresh_interpreter() -> None:
    code = ("import timm, transformers, torchvision; transformers.ViTForImageClassification; "
            "m = timm.create_model('vit_tiny_patch16_224', pretrained=False); print(type(m).__name__)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "VisionTransformer"


def test_the_hook_does_not_import_torch_at_start_up() -> None:
    code = "import sys; print('torch' in sys.modules, 'torchvision_cpu' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout.split() == ["False", "True"], done.stdout + done.stderr


def test_the_hook_leaves_loadable_compiled_operators_alone(tmp_path: Path) -> None:
    sys.path.insert(0, str(ROOT / "scripts" / "env"))
    try:
        import torchvision_cpu
    finally:
        sys.path.pop(0)
    assert torchvision_cpu._compiled_ops_load(str(tmp_path)) is False  # no _C.so: placeholders are needed
    (tmp_path / "_C.so").write_bytes(b"not a shared library")
    assert torchvision_cpu._compiled_ops_load(str(tmp_path)) is False
