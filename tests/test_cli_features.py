"""`vitkit features` on a shared machine (subprocess where the behaviour is the CLI's): one process per output
rank (a second gets a clear refusal), locks that cannot go stale, damaged chunks and manifests recomputed,
no debris, sidecars of their own per output, and kills at chosen random points (also during the merge) that
a rerun completes to exactly the uninterrupted result."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import vitkit
from _cli import run_cli
from vitkit.features import extract_features, load_features
from vitkit.filelock import FileLock

N_IMAGES = 14  # batch 2: 7 chunks


@pytest.fixture(scope="module")
def env(photos, tmp_path_factory):
    """A folder of photo crops and a saved digits model (so every process computes the same features)."""
    root = tmp_path_factory.mktemp("kill")
    images = root / "images"
    images.mkdir()
    arrays = list(photos.values())
    for i in range(N_IMAGES):
        arr = arrays[i % len(arrays)]
        Image.fromarray(arr[i * 7: i * 7 + 120, i * 5: i * 5 + 140]).save(images / f"img{i:02d}.png")
    (images / "img05.png").write_bytes(b"\x89PNG broken")  # one unreadable file, listed as skipped
    model = root / "digits"
    vitkit.save_pretrained(vitkit.create_model("vit_digits"), model)
    reference = extract_features(images, root / "reference.npy", model=str(model), batch_size=2, num_workers=1)
    return {"images": images, "model": model, "reference": reference}


def _assert_same_as_reference(env, out):
    feats, files = load_features(out)
    ref, ref_files = load_features(env["reference"].path)
    np.testing.assert_array_equal(feats, ref)
    assert files == ref_files
    meta = json.loads(out.with_name(out.name + ".json").read_text())
    assert [s["file"] for s in meta["skipped"]] == [str(env["images"] / "img05.png")]
    debris = [p.name for p in out.parent.iterdir() if p.name.startswith(".") or p.name.endswith(".parts")]
    assert not debris, debris


# A run of `vitkit features` that SIGKILLs itself at a chosen point: after chunk N is saved, in the middle of
# writing chunk N (temporary written, not yet renamed), or in the merge (half-written array; array written
# but no sidecars yet; everything written but the parts not yet removed).
KILLER = r"""
import os, signal, sys
import vitkit.featurestore as F
point, n = sys.argv[1], int(sys.argv[2])
count = {"chunk": 0}
def die():
    os.kill(os.getpid(), signal.SIGKILL)
save_chunk, atomic_write, remove_parts = F.save_chunk, F.atomic_write, F.remove_parts
def chunk_hook(path, *args):
    save_chunk(path, *args)
    count["chunk"] += 1
    if point == "after-chunk" and count["chunk"] == n:
        die()
def write_hook(path, write):
    name = str(path)
    if point == "mid-chunk" and name.endswith(f"chunk_{n:06d}.npz"):
        return atomic_write(path, lambda tmp: (write(tmp), die()))
    if point == "mid-array" and name.endswith(".npy"):
        return atomic_write(path, lambda tmp: (write(tmp), die()))
    if point == "before-sidecars" and name.endswith(".npy.json"):
        die()
    return atomic_write(path, write)
def remove_hook(path):
    if point == "before-cleanup" and str(path).endswith(".parts"):
        die()
    return remove_parts(path)
F.atomic_write, F.remove_parts = write_hook, remove_hook
import vitkit.features
vitkit.features.save_chunk = chunk_hook
from vitkit.cli import main
sys.exit(main(sys.argv[3:]))
"""


def _features_args(env, out) -> list[str]:
    return ["features", str(env["images"]), "--out", str(out), "--model", str(env["model"]), "--batch-size", "2",
            "--workers", "1"]


def _kill_at(env, out, point: str, n: int = 0) -> None:
    killed = subprocess.run([sys.executable, "-c", KILLER, point, str(n), *_features_args(env, out)],
                            capture_output=True, text=True, timeout=180)
    assert killed.returncode == -9, (point, killed.stderr[-2000:])


def test_killed_at_random_points_and_resumed_equals_an_uninterrupted_run(env, tmp_path):
    """Killed after a chunk, in the middle of a later chunk and while writing the merged array, then resumed
    by the command itself."""
    rng = random.Random(12)  # random chunks, the same in every run of the suite
    first = rng.randrange(1, 5)
    out = tmp_path / "feats.npy"
    _kill_at(env, out, "after-chunk", first)
    _kill_at(env, out, "mid-chunk", rng.randrange(first, 7))
    assert not out.with_name(out.name + ".json").exists()  # no reader sees a finished-looking output
    _kill_at(env, out, "mid-array")
    assert not out.exists()
    resumed = run_cli(*_features_args(env, out))
    assert resumed.returncode == 0 and "Traceback" not in resumed.stderr, resumed.stderr
    assert "resumed:" in resumed.stdout
    _assert_same_as_reference(env, out)


def test_killed_late_in_the_merge_and_resumed_equals_an_uninterrupted_run(env, tmp_path):
    """Killed with the array written but no sidecars, then again before the parts are removed: the rerun
    finishes the merge (the array beside unfinished parts is not "an existing output")."""
    out = tmp_path / "feats.npy"
    _kill_at(env, out, "before-sidecars")
    assert out.exists() and (tmp_path / "feats.npy.parts").exists()
    _kill_at(env, out, "before-cleanup")
    result = extract_features(env["images"], out, model=str(env["model"]), batch_size=2, num_workers=1)
    assert result.computed == 0 and result.reused == N_IMAGES
    _assert_same_as_reference(env, out)


def test_a_second_run_on_the_same_output_is_refused_clearly(env, tmp_path):
    out = tmp_path / "feats.npy"
    parts = tmp_path / "feats.npy.parts"
    parts.mkdir()
    lock = FileLock.try_acquire(parts / "rank0-of-1.lock")  # as a running process holds it
    try:
        res = run_cli(*_features_args(env, out))
    finally:
        lock.release()
    assert res.returncode == 2, res.stderr
    assert res.stderr.count("\n") == 1 and "Another `vitkit features` run" in res.stderr
    assert f"pid {os.getpid()}" in res.stderr and "rank 0 of 1" in res.stderr
    assert not list(parts.glob("rank0-of-1/chunk_*"))  # the refused run computed nothing


def test_two_runs_at_once_end_in_one_output_and_no_traceback(env, tmp_path):
    out = tmp_path / "feats.npy"
    procs = [subprocess.Popen([sys.executable, "-m", "vitkit", *_features_args(env, out)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(p.wait(timeout=120), p.stderr.read()) for p in procs]
    for p in procs:
        p.stdout.close()
        p.stderr.close()
    codes = sorted(code for code, _ in results)
    assert codes in ([0, 0], [0, 2]), results  # both finish (one after the other) or one is refused
    for code, err in results:
        assert "Traceback" not in err
        if code == 2:
            assert "Another `vitkit features` run" in err or "already exists" in err or "was written by" in err
    _assert_same_as_reference(env, out)


def test_a_lock_left_by_a_killed_run_is_reported_and_taken_over(env, tmp_path, caplog):
    out = tmp_path / "feats.npy"
    parts = tmp_path / "feats.npy.parts"
    parts.mkdir()
    owner = {"pid": 999999, "host": "gone-host", "started": "2026-01-01 00:00:00"}
    for name in ("merge.lock", "rank0-of-1.lock"):  # nobody holds them: their process was killed
        (parts / name).write_text(json.dumps(owner))
    extract_features(env["images"], out, model=str(env["model"]), batch_size=2, num_workers=1)
    assert caplog.text.count("left by a run that was killed (pid 999999 on host gone-host") == 2
    _assert_same_as_reference(env, out)


def _interrupted(env, out, monkeypatch, after: int) -> None:
    """A library run stopped (KeyboardInterrupt) after ``after`` chunks were saved."""
    import vitkit.features as F

    saved, count = F.save_chunk, [0]

    def stop(*args):
        saved(*args)
        count[0] += 1
        if count[0] == after:
            raise KeyboardInterrupt

    with monkeypatch.context() as m, pytest.raises(KeyboardInterrupt):
        m.setattr(F, "save_chunk", stop)
        extract_features(env["images"], out, model=str(env["model"]), batch_size=2, num_workers=1)


def test_damaged_chunks_and_manifest_are_recomputed(env, tmp_path, caplog, monkeypatch):
    out = tmp_path / "feats.npy"
    _interrupted(env, out, monkeypatch, after=5)
    rank = tmp_path / "feats.npy.parts" / "rank0-of-1"
    chunks = sorted(rank.glob("chunk_*.npz"))
    assert len(chunks) == 5
    chunks[1].write_bytes(chunks[1].read_bytes()[:200])  # truncated
    data = bytearray(chunks[3].read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte (the zip member's CRC catches it)
    chunks[3].write_bytes(bytes(data))
    result = extract_features(env["images"], out, model=str(env["model"]), batch_size=2, num_workers=1)
    assert "chunk_000001.npz' is damaged" in caplog.text and "chunk_000003.npz' is damaged" in caplog.text
    assert result.reused == 3 * 2 and result.computed == N_IMAGES - 6
    _assert_same_as_reference(env, out)

    out2 = tmp_path / "again.npy"
    _interrupted(env, out2, monkeypatch, after=2)
    (tmp_path / "again.npy.parts" / "manifest.json").write_text('{"settings": {"model": ')  # truncated
    result = extract_features(env["images"], out2, model=str(env["model"]), batch_size=2, num_workers=1)
    assert "manifest.json is damaged" in caplog.text and result.reused == 0
    _assert_same_as_reference(env, out2)


def test_a_failed_run_leaves_no_parts_folder(tmp_path):
    (tmp_path / "bad.jpg").write_text("not an image")
    out = tmp_path / "f.npy"
    res = run_cli("features", str(tmp_path / "bad.jpg"), "--out", str(out), "--model", "vit_digits")
    assert res.returncode == 2 and "None of the 1 images could be read" in res.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.jpg"]


def test_outputs_with_one_stem_keep_their_own_sidecars(env, tmp_path):
    files = sorted(env["images"].glob("*.png"))
    a = extract_features(files[:3], tmp_path / "cls.npy", model=str(env["model"]), num_workers=1)
    b = extract_features(files[3:5], tmp_path / "cls.safetensors", model=str(env["model"]), num_workers=1)
    assert load_features(a.path)[1] == [str(f) for f in files[:3]]
    assert load_features(b.path)[1] == [str(f) for f in files[3:5]]
    assert (tmp_path / "cls.npy.json").exists() and (tmp_path / "cls.safetensors.files.txt").exists()
    # a file list under the name earlier versions used is still read
    (tmp_path / "cls.npy.files.txt").rename(tmp_path / "cls.files.txt")
    assert load_features(a.path)[1] == [str(f) for f in files[:3]]


def test_in_memory_features_need_no_file(env, photos, tmp_path):
    model = vitkit.load_model(str(env["model"]))
    files = sorted(env["images"].glob("*.png"))[:6]
    result = extract_features(files + [photos["rocket"]], model)  # positional model, no output file
    assert result.path is None and result.features.shape == (6, model.num_features)  # img05 is unreadable
    on_disk = extract_features(files, tmp_path / "f.npy", model=model)
    np.testing.assert_array_equal(result.features[:5], load_features(on_disk.path)[0])
    assert result.files[-1] == "<image 6>" and result.skipped[0][0].endswith("img05.png")
    with pytest.raises(vitkit.VitkitError, match="needs a model"):
        extract_features(files, tmp_path / "g.npy")
