"""A resumed features run only reuses chunks computed with the same weights."""

from __future__ import annotations

import pytest
import torch

import vitkit
from vitkit.config import ViTConfig
from vitkit.errors import DataError
from vitkit.featurestore import parts_dir, prepare_manifest, weights_fingerprint


def _model(seed: int) -> vitkit.VisionTransformer:
    torch.manual_seed(seed)
    return vitkit.VisionTransformer(ViTConfig(img_size=16, patch_size=8, embed_dim=32, depth=1, num_heads=1))


def test_the_fingerprint_tells_weights_apart_and_is_stable():
    assert weights_fingerprint(_model(0).state_dict()) == weights_fingerprint(_model(0).state_dict())
    assert weights_fingerprint(_model(0).state_dict()) != weights_fingerprint(_model(1).state_dict())
    changed = _model(0).state_dict()
    changed["cls_token"][0, 0, 0] += 1e-3
    assert weights_fingerprint(changed) != weights_fingerprint(_model(0).state_dict())


def test_parts_of_other_weights_are_not_resumed(tmp_path):
    parts = parts_dir(tmp_path / "f.npy")
    parts.mkdir()
    settings = {"model": "m", "files": ["a.png"], "world_size": 1, "weights_digest": "0" * 32}
    prepare_manifest(parts, settings, 8)
    with pytest.raises(DataError, match="other weights"):
        prepare_manifest(parts, {**settings, "weights_digest": "1" * 32}, 8)
