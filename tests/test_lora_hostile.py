"""Adapter folders a stranger wrote: checked as weights are, and nothing about the model changes until all is."""

from __future__ import annotations

import json
import os

import pytest
import torch
from safetensors.torch import load_file, save_file

import vitkit
from vitkit.config import ViTConfig
from vitkit.errors import CheckpointError
from vitkit.lora import (
    ADAPTER_CONFIG,
    ADAPTER_WEIGHTS,
    LoRAConfig,
    apply_lora,
    load_adapters,
    lora_layers,
    save_adapters,
)

TINY = ViTConfig(img_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=2, mlp_ratio=2.0, num_classes=5)


def _base() -> vitkit.VisionTransformer:
    torch.manual_seed(0)
    model = vitkit.VisionTransformer(TINY).eval()
    model.pretrained_cfg = vitkit.PretrainedCfg(input_size=(3, 32, 32), num_classes=5, label_names=None)
    return model


def _saved(tmp_path, num_classes: int = 5):
    model = apply_lora(_base(), LoRAConfig(rank=2, alpha=4))
    if num_classes != 5:
        model.reset_classifier(num_classes)
        model.pretrained_cfg = model.pretrained_cfg.replace(num_classes=num_classes,
                                                            label_names=tuple(f"c{i}" for i in range(num_classes)))
    return save_adapters(model, tmp_path / "a")


def _unchanged(model: vitkit.VisionTransformer) -> bool:
    ref = _base()
    return not lora_layers(model) and model.num_classes == 5 and all(
        torch.equal(v, ref.state_dict()[k]) for k, v in model.state_dict().items())


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_adapter_tensors_are_refused_naming_the_tensor(tmp_path, bad):
    out = _saved(tmp_path)
    state = load_file(out / ADAPTER_WEIGHTS)
    state["blocks.0.attn.qkv.lora_B.weight"][0, 0] = bad
    save_file(state, str(out / ADAPTER_WEIGHTS))
    model = _base()
    with pytest.raises(CheckpointError, match="blocks.0.attn.qkv.lora_B.weight.*NaN or Inf"):
        load_adapters(model, out)
    assert _unchanged(model)


def test_integer_adapter_tensors_are_refused(tmp_path):
    out = _saved(tmp_path)
    state = load_file(out / ADAPTER_WEIGHTS)
    state["head.bias"] = state["head.bias"].long()
    save_file(state, str(out / ADAPTER_WEIGHTS))
    with pytest.raises(CheckpointError, match=r"head.bias \(int64\)"):
        load_adapters(_base(), out)


@pytest.mark.parametrize("name", [ADAPTER_CONFIG, ADAPTER_WEIGHTS])
def test_a_fifo_or_a_device_in_place_of_a_file_is_refused_at_once(tmp_path, name):
    out = _saved(tmp_path)
    (out / name).unlink()
    os.mkfifo(out / name)
    with pytest.raises(CheckpointError, match="FIFO"):
        load_adapters(_base(), out)
    (out / name).unlink()
    (out / name).symlink_to("/dev/zero")
    with pytest.raises(CheckpointError, match="device"):
        load_adapters(_base(), out)


@pytest.mark.parametrize("lora", ['"x"', "[1]", '{"rank": "8"}', '{"dropout": "0.1"}', '{"targets": 5}',
                                  '{"targets": [[1]]}', '{"train_head": "yes"}', '{"rank": 1000000000000}',
                                  '{"1": 2}', "[" * 100000 + "]" * 100000])
def test_hostile_configs_end_in_one_checkpoint_error(tmp_path, lora):
    out = _saved(tmp_path)
    meta = json.loads((out / ADAPTER_CONFIG).read_text())
    text = json.dumps(meta).replace(json.dumps(meta["lora"]), lora, 1) if lora.startswith("[[") else None
    meta_text = text or json.dumps({**meta, "lora": json.loads(lora)})
    (out / ADAPTER_CONFIG).write_text(meta_text)
    model = _base()
    with pytest.raises(CheckpointError):
        load_adapters(model, out)
    assert _unchanged(model)


@pytest.mark.parametrize("change", [{"num_classes": "7"}, {"num_classes": -1}, {"num_classes": 10**12},
                                    {"pretrained_cfg": {"label_names": 5}}, {"pretrained_cfg": "x"}])
def test_a_bad_head_is_refused_before_the_model_changes(tmp_path, change):
    out = _saved(tmp_path, num_classes=3)
    meta = json.loads((out / ADAPTER_CONFIG).read_text())
    if "pretrained_cfg" in change and isinstance(change["pretrained_cfg"], dict):
        change = {"pretrained_cfg": {**meta["pretrained_cfg"], **change["pretrained_cfg"]}}
    (out / ADAPTER_CONFIG).write_text(json.dumps({**meta, **change}))
    model = _base()
    with pytest.raises(CheckpointError):
        load_adapters(model, out)
    assert _unchanged(model)


def test_sound_adapters_with_a_new_head_still_load(tmp_path):
    out = _saved(tmp_path, num_classes=3)
    model = load_adapters(_base(), out)
    assert model.num_classes == 3 and model.pretrained_cfg.label_names == ("c0", "c1", "c2")


def test_changed_bytes_in_saved_adapters_fail_their_checksum(tmp_path):
    out = _saved(tmp_path)
    path = out / ADAPTER_WEIGHTS
    data = bytearray(path.read_bytes())
    data[-3] ^= 0x40  # inside the last tensor's data: the header stays sound
    path.write_bytes(bytes(data))
    model = _base()
    with pytest.raises(CheckpointError, match="CRC-32"):
        load_adapters(model, out)
    assert _unchanged(model)
