"""A features run's state on disk: chunks are resumed only onto the same weights, and what is already beside the
output (sidecars, a parts folder) is the user's unless a features run wrote it."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

import vitkit
from vitkit.cli import main
from vitkit.config import ViTConfig
from vitkit.errors import DataError
from vitkit.features import extract_features, load_features
from vitkit.featurestore import merge_features, parts_dir, prepare_manifest, remove_parts, weights_fingerprint


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


@pytest.fixture
def images(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(3):
        Image.new("RGB", (16, 16), (i * 60, 0, 0)).save(folder / f"{i}.png")
    torch.manual_seed(0)
    vitkit.save_pretrained(vitkit.create_model("vit_digits"), tmp_path / "model")
    return folder


def _run(images, out, **kwargs):
    return extract_features(images, out, model=str(images.parent / "model"), batch_size=2, num_workers=0, **kwargs)


@pytest.mark.parametrize("sidecar", ["feats.npy.json", "feats.npy.files.txt"])
def test_a_sidecar_no_features_run_wrote_is_not_replaced_without_overwrite(images, tmp_path, sidecar, capsys):
    mine = tmp_path / sidecar
    mine.write_text('{"my": "notes"}\n')
    out = tmp_path / "feats.npy"
    with pytest.raises(DataError, match=rf"{sidecar}' exists and was not written by `vitkit features`.*overwrite=True"):
        _run(images, out)
    assert mine.read_text() == '{"my": "notes"}\n' and not out.exists()
    model = tmp_path / "model"
    assert main(["features", str(images), "--out", str(out), "--model", str(model), "--workers", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and sidecar in err[0] and "--overwrite" in err[0]
    result = _run(images, out, overwrite=True)
    assert len(result.files) == 3 and mine.read_text() != '{"my": "notes"}\n'


def test_sidecars_of_an_earlier_features_run_are_replaced_as_before(images, tmp_path):
    out = tmp_path / "feats.npy"
    _run(images, out)
    out.unlink()  # the array removed, its metadata and file list left behind
    _run(images, out)
    feats, files = load_features(out)
    assert feats.shape[0] == 3 and files == json.loads(out.with_name("feats.npy.json").read_text())["files"]


@pytest.mark.parametrize("kind", ["file", "folder", "link"])
def test_a_parts_folder_vitkit_did_not_make_is_refused_and_kept(images, tmp_path, kind):
    out = tmp_path / "feats.npy"
    parts = parts_dir(out)
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "thesis.tex").write_text("years of work")
    if kind == "link":
        parts.symlink_to(theirs)
        kept = theirs / "thesis.tex"
    else:
        parts.mkdir()
        kept = parts / ("thesis.tex" if kind == "file" else "rank0-of-1" if kind == "folder" else "")
        if kind == "folder":  # vitkit's name, holding something vitkit does not write there
            kept.mkdir()
            kept = kept / "thesis.tex"
        kept.write_text("years of work")
    for overwrite in (False, True):
        with pytest.raises(DataError, match=r"feats\.npy\.parts' is where .* something vitkit did not write"):
            _run(images, out, overwrite=overwrite)
    with pytest.raises(DataError, match="something vitkit did not write"):
        merge_features(out)
    assert kept.read_text() == "years of work" and sorted(p.name for p in theirs.iterdir()) == ["thesis.tex"]
    assert not out.exists()


def test_only_vitkits_own_entries_are_removed_from_a_parts_folder(tmp_path):
    parts = tmp_path / "f.npy.parts"
    (parts / "rank0-of-2").mkdir(parents=True)
    for name in ("manifest.json", "merge.lock", "rank0-of-2.lock", ".manifest.json.abc.tmp", "rank0-of-2/done.json"):
        (parts / name).write_text("x")
    np.savez(parts / "rank0-of-2" / "chunk_000000.npz", a=np.zeros(1))
    (parts / "added-later.txt").write_text("keep me")
    remove_parts(parts)
    assert sorted(p.name for p in parts.iterdir()) == ["added-later.txt"]
    (parts / "added-later.txt").unlink()
    (parts / "rank1-of-2").mkdir()
    remove_parts(parts)
    assert not parts.exists()


@pytest.fixture
def unmerged(images, tmp_path, monkeypatch):
    """Every rank of a run done and nothing merged yet (its parts folder, as a killed merge leaves it)."""
    import vitkit.features as features

    with monkeypatch.context() as m:
        m.setattr(features, "merge_if_complete", lambda out: None)
        _run(images, tmp_path / "feats.npy")
    return tmp_path / "feats.npy"


@pytest.mark.parametrize("manifest", ["[" * 100_000 + "]" * 100_000,
                                      '{"settings": {"world_size": 1000000000, "files": []}, "chunk_size": 2}',
                                      '{"settings": {"world_size": "2", "files": []}, "chunk_size": 2}'])
def test_a_damaged_manifest_is_no_manifest(unmerged, images, manifest):
    (parts_dir(unmerged) / "manifest.json").write_text(manifest)
    with pytest.raises(DataError, match="No parts to merge"):
        merge_features(unmerged)
    result = _run(images, unmerged)  # a rerun recomputes what it cannot trust
    assert result.computed == 3 and load_features(unmerged)[0].shape[0] == 3


@pytest.mark.parametrize("rows", ["width", "other-rank", "float-index"])
def test_a_chunk_that_disagrees_with_the_run_is_named_removed_and_recomputed(unmerged, images, rows):
    chunk = parts_dir(unmerged) / "rank0-of-1" / "chunk_000001.npz"
    with np.load(chunk) as data:
        arrays = {k: data[k] for k in data.files}
    if rows == "width":
        arrays["features"] = np.zeros((len(arrays["index"]), 3), np.float32)
    else:
        arrays["index"] = np.asarray([7], np.int64) if rows == "other-rank" else arrays["index"].astype(np.float64)
    with open(chunk, "wb") as fh:
        np.savez(fh, **arrays)
    with pytest.raises(DataError, match=r"chunk_000001\.npz' is damaged.*removed"):
        merge_features(unmerged)
    assert not chunk.exists()
    result = _run(images, unmerged)
    assert result.computed == 1 and load_features(unmerged)[0].shape[0] == 3
