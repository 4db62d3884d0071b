"""Sound files load and damaged ones are named as damaged: checksums that follow deliberate rewrites, a
SigLIP 2 NaFlex folder and a negative image size refused in one line, a damaged Hub cache entry reported as
damaged (not as missing)."""

from __future__ import annotations

import json
import os

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

import vitkit
from vitkit.config import ViTConfig
from vitkit.errors import CheckpointError, CorruptCheckpointError
from vitkit.weights import sources

TINY = dict(img_size=16, patch_size=8, embed_dim=64, depth=2, num_heads=1, num_classes=3)


@pytest.fixture
def saved(tmp_path):
    torch.manual_seed(0)
    model = vitkit.VisionTransformer(ViTConfig(**TINY)).eval()
    path = vitkit.save_pretrained(model, tmp_path / "m.safetensors")
    with safe_open(str(path), "pt") as f:
        meta, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    return model, tmp_path, meta, tensors


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_resaved_in_another_dtype_with_metadata_kept_loads(saved, dtype) -> None:
    model, tmp, meta, tensors = saved
    save_file({k: v.to(dtype) for k, v in tensors.items()}, str(tmp / "r.safetensors"), metadata=meta)
    loaded = vitkit.from_pretrained(tmp / "r.safetensors")
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v.to(dtype).float()), k


def test_resaved_without_the_head_is_reported_missing_not_corrupt(saved) -> None:
    _, tmp, meta, tensors = saved
    save_file({k: v for k, v in tensors.items() if not k.startswith("head")}, str(tmp / "r.safetensors"),
              metadata=meta)
    with pytest.raises(CheckpointError, match="missing tensors.*head.weight") as info:
        vitkit.from_pretrained(tmp / "r.safetensors")
    assert not isinstance(info.value, CorruptCheckpointError)
    headless = vitkit.from_pretrained(tmp / "r.safetensors", num_classes=0)  # the tensors that are there load
    assert headless.num_classes == 0


def test_flipped_bytes_still_refused_with_advice_for_a_deliberate_change(saved) -> None:
    _, tmp, meta, tensors = saved
    changed = dict(tensors, cls_token=tensors["cls_token"] + 1)  # same dtype and shape, other bytes
    save_file(changed, str(tmp / "r.safetensors"), metadata=meta)
    with pytest.raises(CorruptCheckpointError, match="'cls_token' fails its CRC-32.*on purpose.*vitkit_crc32"):
        vitkit.from_pretrained(tmp / "r.safetensors")
    data = bytearray((tmp / "m.safetensors").read_bytes())
    data[-3] ^= 0x10
    (tmp / "m.safetensors").write_bytes(bytes(data))
    with pytest.raises(CorruptCheckpointError, match="CRC-32"):
        vitkit.from_pretrained(tmp / "m.safetensors")


def test_files_with_plain_crcs_still_load_and_are_checked(saved) -> None:
    model, tmp, meta, tensors = saved
    records = json.loads(meta["vitkit_crc32"])
    old = dict(meta, vitkit_crc32=json.dumps({k: r[0] for k, r in records.items()}))  # the earlier layout
    save_file(tensors, str(tmp / "old.safetensors"), metadata=old)
    loaded = vitkit.from_pretrained(tmp / "old.safetensors")
    assert torch.equal(loaded.cls_token, model.cls_token)
    save_file(dict(tensors, cls_token=tensors["cls_token"] * 2), str(tmp / "old.safetensors"), metadata=old)
    with pytest.raises(CorruptCheckpointError, match="cls_token"):
        vitkit.from_pretrained(tmp / "old.safetensors")


def test_negative_image_size_in_a_files_config_is_refused_naming_it(saved) -> None:
    _, tmp, meta, tensors = saved
    desc = json.loads(meta["vitkit"])
    desc["config"]["img_size"] = [-16, -16]
    save_file(tensors, str(tmp / "neg.safetensors"), metadata=dict(meta, vitkit=json.dumps(desc)))
    with pytest.raises(CorruptCheckpointError,
                       match=r"neg.safetensors: its config states img_size=\[-16, -16\], expected a positive"):
        vitkit.create_model("vit_digits", pretrained=tmp / "neg.safetensors", **{**TINY, "global_pool": "token",
                                                                                 "mlp_ratio": 4.0})


def test_linear_patch_embedding_is_refused_naming_it(saved) -> None:
    _, tmp, _, tensors = saved
    flat = dict(tensors)
    flat["patch_embed.proj.weight"] = flat["patch_embed.proj.weight"].reshape(64, -1)  # (D, C*kh*kw)
    save_file(flat, str(tmp / "flat.safetensors"))
    with pytest.raises(CheckpointError, match=r"patch_embed.proj.weight\) has shape \(64, 192\).*linear"):
        vitkit.from_pretrained(tmp / "flat.safetensors")


def test_siglip2_classifier_folder_is_refused_in_one_line(timm, transformers, tmp_path) -> None:
    """(timm first, as transformers' SigLIP 2 classes import torchvision.) The NaFlex towers load; the
    classifier, whose head reads the mean patch token, is refused naming why."""
    vision = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=1, num_attention_heads=1, patch_size=8,
                  num_patches=16)
    transformers.Siglip2VisionModel(transformers.Siglip2VisionConfig(**vision)).save_pretrained(tmp_path / "s2")
    assert vitkit.from_pretrained(tmp_path / "s2").config.posemb_resample == "siglip2"
    config = transformers.Siglip2Config(vision_config=vision, text_config=dict(
        hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=1, vocab_size=50), num_labels=3)
    transformers.Siglip2ForImageClassification(config).save_pretrained(tmp_path / "cls")
    with pytest.raises(CheckpointError, match="is a Siglip2ForImageClassification, which vitkit does not load: .*mean"):
        vitkit.from_pretrained(tmp_path / "cls")
    assert "Siglip2ForImageClassification" in vitkit.weights.inventory(tmp_path / "cls").problems[0]


def _cached(tmp_path, monkeypatch, repo: str):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "cache"))
    storage = sources.cache_folder(repo)
    (storage / "refs").mkdir(parents=True)
    (storage / "snapshots").mkdir()
    return storage


def test_a_damaged_cache_entry_is_called_damaged_not_missing(tmp_path, monkeypatch) -> None:
    storage = _cached(tmp_path, monkeypatch, "timm/vit_tiny_patch16_224.augreg_in21k_ft_in1k")
    os.mkfifo(storage / "refs" / "main")
    with pytest.raises(CorruptCheckpointError, match="cache entry .* is damaged: the ref refs/main is a FIFO"):
        vitkit.create_model("vit_tiny_patch16_224", pretrained=True)


def test_a_hub_failure_with_an_empty_message_is_one_line(tmp_path, monkeypatch) -> None:
    import huggingface_hub

    _cached(tmp_path, monkeypatch, "org/name")

    def fail(*args, **kwargs):
        raise OSError()

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fail)
    with pytest.raises(sources.HubUnavailableError, match=r"Could not get 'org/name' .*\(OSError: no message\)"):
        vitkit.from_pretrained("hf-hub:org/name")
