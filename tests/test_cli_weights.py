"""`vitkit weights` as a user reads it (subprocess): tensors in natural order, a plain ViT not named DeiT, a
training checkpoint named as such, and a clear line for files that are not checkpoints."""

from __future__ import annotations

import json
import re

import torch
from PIL import Image

import vitkit
from _cli import run_cli


def _names(text: str) -> list[str]:
    return [line.split()[0] for line in text.splitlines() if re.match(r"^(blocks|cls_token|pos_embed|patch|norm|head)",
                                                                     line)]


def test_natural_order_and_no_deit_name_for_a_plain_vit(tmp_path):
    model = vitkit.create_model("vit_small_patch16_224")  # 12 blocks: blocks.10 and blocks.11 exist
    path = vitkit.save_pretrained(model, tmp_path / "vit_s.safetensors")
    res = run_cli("weights", str(path), "--all")
    assert res.returncode == 0, res.stderr
    blocks = [int(n.split(".")[1]) for n in _names(res.stdout) if n.startswith("blocks.")]
    assert blocks == sorted(blocks) and blocks[-1] == 11  # blocks.2 before blocks.10
    arch = next(line for line in res.stdout.splitlines() if line.startswith("architecture:"))
    assert "(= vit_small_patch16_224; same architecture as deit_small_patch16_224)" in arch
    data = json.loads(run_cli("weights", str(path), "--json").stdout)
    assert data["matches"] == "vit_small_patch16_224" and data["also_matches"] == ["deit_small_patch16_224"]
    names = [t["name"] for t in data["tensors"]]
    assert names.index("blocks.2.norm1.weight") < names.index("blocks.10.norm1.weight")


def test_a_training_checkpoint_is_named_as_such(tmp_path):
    model = vitkit.create_model("vit_digits")
    state = {"version": 1, "model": model.state_dict(), "optimizer": {"state": {}, "param_groups": []},
             "progress": {"epoch": 3, "step": 120}}
    torch.save(state, tmp_path / "checkpoint.pt")
    res = run_cli("weights", str(tmp_path / "checkpoint.pt"))
    assert res.returncode == 0, res.stderr
    assert "a training checkpoint" in res.stdout and "plus version, optimizer, progress" in res.stdout
    assert "(= vit_digits)" in res.stdout
    torch.save(model.state_dict(), tmp_path / "plain.pth")
    assert "training checkpoint" not in run_cli("weights", str(tmp_path / "plain.pth")).stdout


def test_files_that_are_not_checkpoints_get_one_clear_line(tmp_path):
    Image.new("RGB", (8, 8)).save(tmp_path / "cat.jpg")
    (tmp_path / "config.json").write_text('{"hidden_size": 8}')
    for name, expected in (("cat.jpg", "is an image, not a checkpoint"), ("config.json", "is a JSON file")):
        res = run_cli("weights", str(tmp_path / name))
        assert res.returncode == 2 and res.stderr.count("\n") == 1 and expected in res.stderr, res.stderr
