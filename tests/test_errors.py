"""Error classes by category (the hierarchy in vitkit.errors), raised where they belong, and the CLI's one line."""

from __future__ import annotations

import json
import os
import struct
import zipfile

import numpy as np
import pytest
import torch

import vitkit
from vitkit import errors
from vitkit.cli import main
from vitkit.config import LIMITS, ViTConfig
from vitkit.data.transforms import resample_filter
from vitkit.errors import (
    CheckpointError,
    ConfigError,
    CorruptCheckpointError,
    OutputError,
    UnsafeCheckpointError,
    VitkitError,
)
from vitkit.fileio import atomic_write
from vitkit.posemb import resample_posemb

TINY = dict(img_size=16, patch_size=8, embed_dim=64, depth=2, num_heads=1, mlp_ratio=2.0, num_classes=3)


def test_hierarchy_is_documented_and_rooted() -> None:
    classes = [c for c in vars(errors).values() if isinstance(c, type) and issubclass(c, Exception)]
    assert len(classes) >= 11
    for cls in classes:
        assert issubclass(cls, VitkitError) and cls.__name__ in errors.__doc__
    assert issubclass(OutputError, ConfigError) and issubclass(ConfigError, ValueError)
    assert issubclass(CorruptCheckpointError, CheckpointError) and issubclass(UnsafeCheckpointError, CheckpointError)


def test_misapplied_classes_now_by_category() -> None:
    model = vitkit.VisionTransformer(ViTConfig(**TINY))
    with pytest.raises(ConfigError, match="interpolation"):
        resample_filter("bicubicc")
    with pytest.raises(ConfigError, match="out of range"):
        model.forward_intermediates(torch.zeros(1, 3, 16, 16), indices=[7])
    with pytest.raises(ConfigError, match="output_fmt"):
        model.forward_intermediates(torch.zeros(1, 3, 16, 16), output_fmt="NWHC")
    with pytest.raises(ConfigError, match="not a square grid"):
        resample_posemb(torch.zeros(1, 6, 8), (2, 2), num_prefix_tokens=0)


@pytest.mark.parametrize(("field", "value", "match"), [
    ("depth", "12", "depth='12' \\(str\\)"), ("img_size", [1, 2, 3], "img_size"), ("qkv_bias", 1, "true or false"),
    ("depth", 10**6, "limit of 512"), ("num_classes", 10**9, "max_num_classes"), ("mlp_ratio", 1e308, "mlp_ratio"),
])
def test_config_types_and_limits(field: str, value: object, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        ViTConfig.from_dict({**TINY, field: value})


def test_limit_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(LIMITS, "max_depth", 1)
    with pytest.raises(ConfigError, match="max_depth"):
        ViTConfig(**TINY)
    monkeypatch.setattr(LIMITS, "max_depth", 2)
    assert ViTConfig(**TINY).depth == 2


@pytest.fixture()
def saved(tmp_path):
    model = vitkit.VisionTransformer(ViTConfig(**TINY))
    return model, tmp_path


def test_nan_refused_and_allowed(saved) -> None:
    model, tmp = saved
    with torch.no_grad():
        model.blocks[1].mlp.fc1.weight[0, 0] = float("nan")
    vitkit.save_pretrained(model, tmp / "m", format="timm")
    with pytest.raises(CorruptCheckpointError, match="blocks.1.mlp.fc1.weight.*1 NaN or Inf"):
        vitkit.from_pretrained(tmp / "m")
    loaded = vitkit.from_pretrained(tmp / "m", allow_nonfinite=True)
    assert torch.isnan(loaded.blocks[1].mlp.fc1.weight[0, 0])


def test_torch_zip_crc_checked(saved) -> None:
    model, tmp = saved
    path = tmp / "m.pth"
    torch.save(model.state_dict(), path)
    with zipfile.ZipFile(path) as zf:
        info = next(i for i in zf.infolist() if i.filename.endswith("/data/0"))
    data = bytearray(path.read_bytes())
    name_len, extra_len = struct.unpack("<HH", data[info.header_offset + 26:info.header_offset + 30])
    data[info.header_offset + 30 + name_len + extra_len + 1] ^= 0x40  # a byte of the member's data
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptCheckpointError, match="fails its check"):
        vitkit.from_pretrained(path)


def test_safetensors_written_by_vitkit_carry_crc(saved) -> None:
    model, tmp = saved
    vitkit.save_pretrained(model, tmp / "m.safetensors", format="vitkit")
    data = bytearray((tmp / "m.safetensors").read_bytes())
    data[-5] ^= 0x01
    (tmp / "m.safetensors").write_bytes(bytes(data))
    with pytest.raises(CorruptCheckpointError, match="CRC-32"):
        vitkit.from_pretrained(tmp / "m.safetensors")


def test_index_outside_folder_refused_without_echo(saved) -> None:
    model, tmp = saved
    vitkit.save_pretrained(model, tmp / "hf", format="hf")
    (tmp / "secret.txt").write_text("TOP-SECRET-BYTES")
    (tmp / "hf" / "model.safetensors").rename(tmp / "hf" / "shard.safetensors")
    index = {"weight_map": {"embeddings.cls_token": "../secret.txt"}}
    (tmp / "hf" / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(UnsafeCheckpointError, match="outside the checkpoint folder") as err:
        vitkit.from_pretrained(tmp / "hf")
    assert "TOP-SECRET" not in str(err.value)


def test_fifo_and_deep_json_refused(tmp_path) -> None:
    os.mkfifo(tmp_path / "w.safetensors")
    with pytest.raises(CheckpointError, match="FIFO"):
        vitkit.from_pretrained(tmp_path / "w.safetensors")
    (tmp_path / "d").mkdir()
    torch.save({"patch_embed.proj.weight": torch.zeros(1)}, tmp_path / "d" / "model.pth")
    (tmp_path / "d" / "config.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(CorruptCheckpointError, match="too deeply"):
        vitkit.from_pretrained(tmp_path / "d")


def test_npz_object_member_and_scalar_kernel(tmp_path) -> None:
    np.savez(tmp_path / "o.npz", **{"embedding/kernel": np.array([{"a": 1}], dtype=object)})
    with pytest.raises(UnsafeCheckpointError, match="pickled"):
        vitkit.from_pretrained(tmp_path / "o.npz")
    model = vitkit.VisionTransformer(ViTConfig(**TINY))
    vitkit.save_pretrained(model, tmp_path / "m.npz", format="npz")
    arrays = dict(np.load(tmp_path / "m.npz"))
    arrays["Transformer/encoderblock_0/MlpBlock_3/Dense_0/kernel"] = np.float32(1.0)
    np.savez(tmp_path / "s.npz", **arrays)
    with pytest.raises(CorruptCheckpointError, match="Dense_0/kernel.*expected a non-empty 2-d"):
        vitkit.from_pretrained(tmp_path / "s.npz")


def test_outputs_refuse_devices_and_folders(tmp_path) -> None:
    with pytest.raises(OutputError, match="system folder"):
        atomic_write("/dev/null", lambda p: p.write_text("x"))
    with pytest.raises(OutputError, match="is a folder"):
        atomic_write(tmp_path, lambda p: p.write_text("x"))
    assert os.path.exists("/dev/null") and not os.path.isfile("/dev/null")


def test_cli_one_line_and_debug(saved, capsys: pytest.CaptureFixture[str]) -> None:
    model, tmp = saved
    vitkit.save_pretrained(model, tmp / "m", format="vitkit")
    torch.save({**model.state_dict(), "blocks.1.attn.qkv.weight": torch.zeros(3, 3)}, tmp / "bad.pth")
    assert main(["weights", str(tmp / "bad.pth"), "--limit", "-1"]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    assert main(["convert", str(tmp / "bad.pth"), str(tmp / "out"), "--to", "vitkit"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "mis-shaped" in err and "Traceback" not in err
    assert main(["convert", str(tmp / "bad.pth"), str(tmp / "out"), "--to", "vitkit", "--debug"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and "blocks.1.attn.qkv.weight" in err
    with pytest.raises(SystemExit) as exit_:
        main(["predict", "x.png", "--model", str(tmp / "m"), "--batch-size", "many"])
    assert exit_.value.code == 2 and capsys.readouterr().err.count("\n") == 1


def test_unknown_save_format_is_a_config_error(saved) -> None:
    model, tmp = saved
    with pytest.raises(ConfigError, match="Unknown weight format 'onnx'"):
        vitkit.save_pretrained(model, tmp / "m", format="onnx")
