"""Property-based fuzzing (hypothesis) of the parsers and validators vitkit owns: whatever the input, the
result is a value or a VitkitError of the documented category, never another exception.

Examples per property: 150 by default, 3,000 with ``--long`` (profiles set in conftest.py).
"""

from __future__ import annotations

import contextlib
import io
import json
import struct
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vitkit.config import PretrainedCfg, ViTConfig
from vitkit.errors import CheckpointError, ConfigError, UnsafeCheckpointError
from vitkit.weights import validate
from vitkit.weights.mapping import remap
from vitkit.weights.npz import READ_RULES
from vitkit.weights.readers import read_checkpoint

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12)
VIT_FIELDS = [f for f in ViTConfig.__dataclass_fields__]
PCFG_FIELDS = [f for f in PretrainedCfg.__dataclass_fields__]
small_fields = st.dictionaries(st.sampled_from(VIT_FIELDS), json_values | st.integers(0, 4096), max_size=6)
nice = settings(suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


@nice
@given(small_fields)
def test_vit_config_from_any_json(fields: dict) -> None:
    try:
        config = ViTConfig.from_dict(fields)
    except ConfigError as exc:
        assert str(exc)
        return
    assert config.estimated_params() > 0 and config.depth <= 512


@nice
@given(st.dictionaries(st.sampled_from(PCFG_FIELDS), json_values, max_size=5))
def test_pretrained_cfg_from_any_json(fields: dict) -> None:
    try:
        cfg = PretrainedCfg.from_dict(fields)
    except ConfigError:
        return
    json.dumps(cfg.to_dict())  # a valid one is JSON-ready


@nice
@given(st.binary(max_size=300) | json_values.map(lambda v: json.dumps(v).encode()))
def test_json_text(data: bytes) -> None:
    with contextlib.suppress(CheckpointError):
        validate.load_json_text(data, "fuzz.json")


@nice
@given(st.dictionaries(st.sampled_from([*validate.CONFIG_SCHEMA, "vision_config", "pretrained_cfg"]), json_values,
                       max_size=6))
def test_config_json_schema(data: dict) -> None:
    try:
        validate.check_config_json(data, "config.json")
    except CheckpointError as exc:
        assert "config.json" in str(exc)


@nice
@given(st.text(max_size=40))
def test_shard_names_stay_inside(name: str) -> None:
    folder = Path("/ckpt/model")
    try:
        path = validate.inside_folder(folder, name, "The index")
    except CheckpointError:
        return
    assert not Path(name).is_absolute() and ".." not in Path(name).parts[:1]
    assert str(path).startswith(str(folder))


def _file(data: bytes, suffix: str) -> Path:
    with tempfile.NamedTemporaryFile(suffix=suffix, delete=False) as f:
        f.write(data)
    return Path(f.name)


safetensors_headers = st.dictionaries(
    st.text(max_size=6),
    st.fixed_dictionaries({"dtype": st.sampled_from(["F32", "F16", "I64", "BOOL", "Q9"]) | json_values,
                           "shape": st.lists(st.integers(-2, 2**40), max_size=3) | json_values,
                           "data_offsets": st.lists(st.integers(-5, 2**40), max_size=3) | json_values}),
    max_size=3)


@nice
@given(safetensors_headers, st.binary(max_size=64), st.integers(0, 2**64 - 1) | st.none())
def test_safetensors_read(header: dict, data: bytes, length: int | None) -> None:
    blob = json.dumps(header).encode()
    path = _file(struct.pack("<Q", len(blob) if length is None else length) + blob + data, ".safetensors")
    try:
        ckpt = read_checkpoint(path)
        for key in ckpt.tensors:
            ckpt.tensors[key].sum()
    except CheckpointError:
        pass
    finally:
        path.unlink()


npy_headers = st.fixed_dictionaries({
    "descr": st.sampled_from(["<f4", "<f2", "|b1", "<i8", "|O", "<U3", "<c8", "V8"]),
    "fortran_order": st.booleans(), "shape": st.lists(st.integers(-1, 2**33), max_size=3).map(tuple)})


@nice
@given(npy_headers, st.binary(max_size=64), st.booleans())
def test_npz_read(header: dict, payload: bytes, compress: bool) -> None:
    text = repr(header).encode()
    text += b" " * (63 - (len(text) + 10) % 64) + b"\n"
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED) as zf:
        zf.writestr("embedding/kernel.npy", b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text)) + text + payload)
    path = _file(buf.getvalue(), ".npz")
    try:
        ckpt = read_checkpoint(path)
        for key in ckpt.tensors:
            assert ckpt.tensors[key].dtype in (torch.float32, torch.float16, torch.bool, torch.int64)
    except UnsafeCheckpointError:
        assert header["descr"] == "|O"
    except CheckpointError:
        pass
    finally:
        path.unlink()


@nice
@given(st.lists(st.tuples(st.sampled_from(["embedding/kernel", "Transformer/encoderblock_0/MlpBlock_3/Dense_0/kernel",
                                           "Transformer/encoderblock_0/MultiHeadDotProductAttention_1/query/kernel",
                                           "Transformer/encoderblock_0/MultiHeadDotProductAttention_1/out/kernel",
                                           "cls", "head/bias"]),
                          st.lists(st.integers(0, 4), max_size=5)), max_size=4))
def test_remap_any_shapes(entries: list) -> None:
    tensors = {name: torch.zeros(shape) for name, shape in entries}
    with contextlib.suppress(CheckpointError):
        remap(tensors, READ_RULES, num_heads=2)


@pytest.mark.parametrize("value", [np.float32(1.0), "x"])
def test_fuzz_helpers_reject_wrong_types(value: object) -> None:
    """The validators name the field and the bad value (the fuzzers above only check the category)."""
    with pytest.raises(CheckpointError, match="hidden_size"):
        validate.check_config_json({"hidden_size": value}, "config.json")
