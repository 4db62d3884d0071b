"""`predict`/`features` as Ray Data jobs on a local Ray instance: the single-process rows (features within 1e-5),
unreadable images reported per row, and a job that survives one of its actors being killed."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from PIL import Image

import vitkit
from vitkit.errors import ConfigError, OutputError

ray = pytest.importorskip("ray", reason="ray[data] is in the test extras; install with pip install -e '.[test]'")
from vitkit.ray import read_rows, run_job  # noqa: E402


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def job_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("rayjob")
    model = root / "digits"
    vitkit.save_pretrained(vitkit.create_model("vit_digits"), model)
    images = root / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(24):
        Image.fromarray(rng.integers(0, 256, (40 + i, 36, 3), dtype=np.uint8)).save(images / f"{i:03d}.png")
    (images / "broken.png").write_text("not an image")
    return {"root": root, "model": str(model), "images": images}


def test_features_and_predict_equal_one_process(local_ray, job_files, tmp_path):
    model, images = job_files["model"], job_files["images"]
    result = run_job([images], tmp_path / "feats", task="features", model=model, num_workers=2, batch_size=5)
    want = vitkit.extract_features([images], model)
    rows = read_rows(result.out)
    assert result.rows == len(rows) == 25
    assert result.skipped == [(str(images / "broken.png"), dict(want.skipped)[str(images / "broken.png")])]
    good = [r for r in rows if r["error"] is None]
    assert [r["path"] for r in good] == want.files
    np.testing.assert_allclose(np.array([r["features"] for r in good]), want.features, atol=1e-5)

    result = run_job([images], tmp_path / "preds", task="predict", model=model, num_workers=1, batch_size=5,
                     top_k=3)
    expected = {r.source: r.to_dict() for r in vitkit.predict([images], model, top_k=3)}
    rows = read_rows(result.out)
    assert len(rows) == len(expected) == 25
    for row in rows:
        e = expected[row["path"]]
        assert row["error"] == e.get("error")
        assert [p["index"] for p in row["predictions"]] == [p["index"] for p in e["predictions"]]
        np.testing.assert_allclose([p["probability"] for p in row["predictions"]],
                                   [p["probability"] for p in e["predictions"]], atol=1e-6)


def test_bad_job_arguments_are_refused_before_ray_runs(job_files, tmp_path):
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "x.parquet").write_text("")
    with pytest.raises(OutputError, match="already exists"):
        run_job([job_files["images"]], tmp_path / "taken", task="features", model=job_files["model"])
    with pytest.raises(ConfigError, match="num_workers=0"):
        run_job([job_files["images"]], tmp_path / "o", task="features", model=job_files["model"], num_workers=0)
    with pytest.raises(ConfigError, match="task='train'"):
        run_job([job_files["images"]], tmp_path / "o", task="train", model=job_files["model"])


@pytest.mark.slow
def test_a_killed_actor_does_not_lose_the_job(local_ray, job_files, tmp_path):
    import psutil

    images = tmp_path / "many"
    images.mkdir()
    rng = np.random.default_rng(1)
    for i in range(300):
        Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(images / f"{i:04d}.png")
    out = tmp_path / "feats"
    killed = []

    def kill_one_actor_mid_job():
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not killed:
            if out.is_dir() and any(out.glob("*.parquet")):  # the job has written rows: it is under way
                for proc in psutil.process_iter(["cmdline"]):
                    if "MapWorker" in " ".join(proc.info["cmdline"] or []):
                        proc.kill()
                        killed.append(proc.pid)
                        return
            time.sleep(0.05)

    killer = threading.Thread(target=kill_one_actor_mid_job)
    killer.start()
    result = run_job([images], out, task="features", model=job_files["model"], num_workers=2, batch_size=2)
    killer.join(timeout=5)
    assert killed, "no actor was found to kill while the job ran"
    want = vitkit.extract_features([images], job_files["model"])
    rows = read_rows(result.out)
    assert [r["path"] for r in rows] == want.files  # every image once: the lost batch was retried, not doubled
    np.testing.assert_allclose(np.array([r["features"] for r in rows]), want.features, atol=1e-5)
