"""`vitkit predict` as a user runs it (subprocess): folders, unreadable files skipped and counted, a CSV /
JSON of every prediction, a loud warning for random weights, one-line device errors."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from PIL import Image

import vitkit
from _cli import run_cli
from vitkit.predict import predict, save_predictions


@pytest.fixture(scope="module")
def folder(photos, tmp_path_factory):
    """Two real photos (one in a subfolder), a truncated JPEG and a text file named .jpg."""
    root = tmp_path_factory.mktemp("mixed")
    (root / "sub").mkdir()
    Image.fromarray(photos["chelsea"]).save(root / "a_cat.jpg", quality=90)
    Image.fromarray(photos["coffee"]).save(root / "sub" / "d_coffee.png")
    data = (root / "a_cat.jpg").read_bytes()
    (root / "b_truncated.jpg").write_bytes(data[: len(data) // 3])
    (root / "c_text.jpg").write_text("not an image")
    return root


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "digits"
    vitkit.save_pretrained(vitkit.create_model("vit_digits"), path)
    return path


def test_folder_with_unreadable_files_is_skipped_named_and_counted(folder, saved, tmp_path):
    out_csv = tmp_path / "preds.csv"
    res = run_cli("predict", str(folder), "--model", str(saved), "--top-k", "2", "--output", str(out_csv))
    assert res.returncode == 0, res.stderr
    assert "Traceback" not in res.stderr
    assert "2 of 4 image(s) could not be read" in res.stderr
    assert "b_truncated.jpg" in res.stderr and "c_text.jpg" in res.stderr
    assert "RANDOM" not in res.stderr  # a saved model is not a random one
    rows = list(csv.DictReader(out_csv.open()))
    assert [r["image"] for r in rows] == [str(folder / n) for n in
                                          ("a_cat.jpg", "a_cat.jpg", "b_truncated.jpg", "c_text.jpg",
                                           "sub/d_coffee.png", "sub/d_coffee.png")]
    assert rows[2]["error"] and rows[3]["error"] and not rows[0]["error"]
    # the CSV holds exactly what the library computes for the readable images
    expected = predict([folder / "a_cat.jpg", folder / "sub" / "d_coffee.png"], str(saved), top_k=2)
    got = [(int(r["index"]), float(r["probability"])) for r in rows if not r["error"]]
    want = [(p.index, p.probability) for e in expected for p in e.top_k]
    assert [g[0] for g in got] == [w[0] for w in want]
    np.testing.assert_allclose([g[1] for g in got], [w[1] for w in want], rtol=1e-5)
    assert not list(tmp_path.glob(".*.tmp"))  # written atomically, no temporary left


def test_json_output_and_every_image_unreadable_is_an_error(folder, saved, tmp_path):
    out_json = tmp_path / "preds.json"
    res = run_cli("predict", str(folder / "c_text.jpg"), str(folder / "b_truncated.jpg"), "--model", str(saved),
                  "--output", str(out_json))
    assert res.returncode == 2 and "error: None of the 2 images could be read" in res.stderr
    assert res.stderr.count("skipped ") == 2 and not res.stdout
    data = json.loads(out_json.read_text())
    assert [d["predictions"] for d in data] == [[], []] and all("error" in d for d in data)


def test_random_weights_warn_loudly_on_stderr(folder):
    res = run_cli("predict", str(folder / "a_cat.jpg"), "--model", "vit_digits", "--top-k", "1")
    assert res.returncode == 0
    assert "RANDOM weights" in res.stderr and "vit_digits" in res.stderr
    assert "RANDOM" not in res.stdout  # stdout stays clean for pipes


@pytest.mark.parametrize("command, device", [("predict", "cuda"), ("features", "gpu"), ("attention", "mps")])
def test_bad_device_is_one_line(command, device, folder, tmp_path):
    extra = {"predict": [], "features": ["--out", str(tmp_path / "f.npy")],
             "attention": ["--out", str(tmp_path / "a.png")]}[command]
    res = run_cli(command, str(folder / "a_cat.jpg"), "--model", "vit_digits", "--device", device, *extra)
    assert res.returncode == 2, res.stderr
    assert res.stderr.count("\n") == 1 and res.stderr.startswith(f"vitkit {command}: error: device=")
    assert device in res.stderr


def test_save_predictions_refuses_an_unknown_format(tmp_path):
    with pytest.raises(vitkit.ConfigError, match=r"\.csv or \.json"):
        save_predictions([], tmp_path / "preds.txt")


def test_a_missing_path_a_paper_name_and_ctrl_c_are_one_line(folder, capsys, monkeypatch):
    from vitkit.cli import main

    image = str(folder / "a_cat.jpg")
    assert main(["predict", image, "--model", "runs/nosuch/best"]) == 2
    assert "No such path: 'runs/nosuch/best' does not exist" in capsys.readouterr().err
    assert main(["predict", image, "--model", "ViT-B/16"]) == 2
    assert "Did you mean: vit_base_patch16_224" in capsys.readouterr().err

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    import sys

    monkeypatch.setattr(sys.modules["vitkit.predict"], "predict", interrupted)  # Ctrl-C while the model loads
    assert main(["predict", image, "--model", "vit_digits"]) == 130
    assert capsys.readouterr().err == "vitkit predict: interrupted\n"
