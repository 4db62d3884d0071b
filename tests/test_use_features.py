"""`features`: batched extraction through the CLI, skipped files listed, resume, rank split and merge."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

import vitkit
from vitkit import create_model
from vitkit.cli import main
from vitkit.errors import ConfigError, DataError, VitkitError
from vitkit.features import extract_features, load_features, merge_features
from vitkit.filelock import FileLock
from vitkit.processor import ImageProcessor

MODEL = "vit_digits"  # 32x32 input, 8x8 patches, average pooling: fast on CPU


@pytest.fixture(scope="module")
def folder(photos, tmp_path_factory):
    """Six real photos in two folders, plus an unreadable file (sorted: 3 photos, broken, 3 photos)."""
    root = tmp_path_factory.mktemp("images")
    (root / "sub").mkdir()
    for i, (name, arr) in enumerate(photos.items()):
        Image.fromarray(arr).save(root / ("sub" if i % 2 else ".") / f"{name}.png")
    (root / "sub" / "broken.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")
    return root


def _reference(model: torch.nn.Module, files: list[str]) -> np.ndarray:
    with torch.no_grad():
        x = ImageProcessor.from_model(model)(files)
        return model.forward_head(model.forward_features(x), pre_logits=True).numpy()


def test_cli_features_npy_with_skipped_file(folder, tmp_path, capsys):
    out = tmp_path / "feats.npy"
    assert main(["features", str(folder), "--out", str(out), "--model", MODEL, "--batch-size", "3"]) == 0
    captured = capsys.readouterr()
    assert "broken.jpg" in captured.err and "1 skipped" in captured.out
    feats, files = load_features(out)
    assert feats.shape == (6, 96) and len(files) == 6 and not any("broken" in f for f in files)
    meta = json.loads((tmp_path / "feats.npy.json").read_text())
    assert meta["skipped"][0]["file"].endswith("broken.jpg") and "not an image" in meta["skipped"][0]["error"]
    assert meta["shape"] == [6, 96] and meta["files"] == files
    assert not (tmp_path / "feats.npy.parts").exists()


def test_saved_model_features_match_the_model(folder, tmp_path, capsys):
    model = create_model(MODEL, num_classes=0).eval()
    vitkit.save_pretrained(model, tmp_path / "saved")
    out = tmp_path / "feats.safetensors"
    args = ["features", str(folder), "--out", str(out), "--model", str(tmp_path / "saved"), "--batch-size", "4"]
    assert main(args) == 0
    feats, files = load_features(out)
    np.testing.assert_allclose(feats, _reference(model, files), rtol=1e-5, atol=1e-5)
    assert main(args) == 2  # the output exists: refuse to overwrite silently
    assert "--overwrite" in capsys.readouterr().err


@pytest.mark.parametrize("pool,layers,shape", [
    ("token", None, (6, 96)), ("avg", [-1, 0], (6, 2, 96)), ("none", [1], (6, 1, 17, 96)),
    ("cls", None, (6, 96)), ("tokens", [1], (6, 1, 17, 96)),  # vitkit 0.1's names, still accepted
])
def test_pools_and_layers(folder, tmp_path, pool, layers, shape):
    model = create_model(MODEL).eval()
    result = extract_features([folder], tmp_path / "f.npy", model=model, pool=pool, layers=layers, batch_size=4)
    assert result.shape == shape and len(result.skipped) == 1
    if pool in ("token", "cls"):
        with torch.no_grad():
            x = ImageProcessor.from_model(model)(result.files)
            np.testing.assert_allclose(load_features(result.path)[0], model.forward_features(x)[:, 0].numpy(),
                                       rtol=1e-5, atol=1e-5)


def test_bad_arguments(folder, tmp_path):
    model = create_model(MODEL)
    with pytest.raises(ConfigError, match="attention-pool"):
        extract_features(folder, tmp_path / "f.npy", model=model, pool="map")
    with pytest.raises(ConfigError, match="expected one of default, token, avg, map, none"):
        extract_features(folder, tmp_path / "f.npy", model=model, pool="mean")
    with pytest.raises(VitkitError, match=".npy or .safetensors"):
        extract_features(folder, tmp_path / "f.csv", model=model)
    with pytest.raises(DataError, match="does not exist"):
        extract_features(tmp_path / "nothing", tmp_path / "f.npy", model=model)
    with pytest.raises(VitkitError, match="rank"):
        extract_features(folder, tmp_path / "f.npy", model=model, rank=2, world_size=2)


class _Counting:
    """Wraps forward_features to count images and optionally stop (Ctrl-C) after some batches."""

    def __init__(self, model: torch.nn.Module, stop_after: int | None = None) -> None:
        self.model, self.stop_after, self.images, self.batches = model, stop_after, 0, 0
        self._original = model.forward_features
        model.forward_features = self

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.stop_after is not None and self.batches == self.stop_after:
            raise KeyboardInterrupt
        self.batches += 1
        self.images += x.shape[0]
        return self._original(x)


def test_interrupted_run_resumes_without_recomputing(folder, tmp_path):
    model = create_model(MODEL).eval()
    full = extract_features(folder, tmp_path / "full.npy", model=model, batch_size=2)
    out = tmp_path / "resumed.npy"
    counter = _Counting(model, stop_after=2)
    with pytest.raises(KeyboardInterrupt):
        extract_features(folder, out, model=model, batch_size=2)
    assert counter.images == 3 and not out.exists()  # chunks [photo, photo], [photo, broken] are done
    assert len(list((tmp_path / "resumed.npy.parts" / "rank0-of-1").glob("chunk_*.npz"))) == 2
    counter.stop_after, counter.images = None, 0
    with pytest.raises(DataError, match="other settings"):
        extract_features(folder, out, model=model, batch_size=2, pool="avg")
    result = extract_features(folder, out, model=model, batch_size=5)  # the first run's chunking is kept
    assert counter.images == 3 and result.reused == 4 and result.computed == 3
    np.testing.assert_array_equal(load_features(out)[0], load_features(full.path)[0])
    assert result.files == full.files and result.skipped == full.skipped


def test_ranks_split_the_work_and_merge(folder, tmp_path, monkeypatch, capsys):
    model = create_model(MODEL).eval()
    full = extract_features(folder, tmp_path / "full.npy", model=model, batch_size=3)
    out = tmp_path / "split.safetensors"
    monkeypatch.setenv("WORLD_SIZE", "3")
    for rank in (2, 0):  # environment variables as torchrun sets them
        monkeypatch.setenv("RANK", str(rank))
        assert extract_features(folder, out, model=model, batch_size=2).path is None
    with pytest.raises(DataError, match=r"rank\(s\) 1 of 3"):
        merge_features(out)
    monkeypatch.delenv("RANK")
    monkeypatch.delenv("WORLD_SIZE")
    # the last rank also merges automatically; here it leaves that to an explicit --merge, since another
    # process (this test) holds the merge lock
    lock = FileLock.try_acquire(tmp_path / "split.safetensors.parts" / "merge.lock")
    extract_features(folder, out, model=model, batch_size=2, rank=1, world_size=3)
    assert not out.exists()
    with pytest.raises(DataError, match=f"being merged right now by pid {os.getpid()}"):
        merge_features(out)
    lock.release()
    assert main(["features", "--merge", "--out", str(out)]) == 0
    feats, files = load_features(out)
    assert files == full.files
    np.testing.assert_allclose(feats, load_features(full.path)[0], rtol=1e-5, atol=1e-6)
    assert json.loads((tmp_path / "split.safetensors.json").read_text())["skipped"][0]["file"].endswith("broken.jpg")
