"""Numbers on the command line are checked where their flag is declared: one line, exit status 2."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

import vitkit
from vitkit.cli import main
from vitkit.errors import ConfigError
from vitkit.export import export_model
from vitkit.predict import ImagePredictions, Prediction, format_predictions, save_predictions

BAD = [
    (["attention", "x.png", "--model", "m", "--out", "o.png", "--alpha", "2"], "--alpha"),
    (["attention", "x.png", "--model", "m", "--out", "o.png", "--alpha", "-0.5"], "--alpha"),
    (["attention", "x.png", "--model", "m", "--out", "o.png", "--discard-ratio", "1"], "--discard-ratio"),
    (["inspect", "m", "--depth", "-1"], "--depth"),
    (["eval", "d", "--model", "m", "--batch-size", "0"], "--batch-size"),
    (["eval", "d", "--model", "m", "--workers", "-1"], "--workers"),
    (["predict", "x.png", "--model", "m", "--batch-size", "0"], "--batch-size"),
    (["predict", "x.png", "--model", "m", "--top-k", "0"], "--top-k"),
    (["features", "x.png", "--model", "m", "--out", "f.npy", "--workers", "-1"], "--workers"),
    *((["export", "m", "--out", "m.onnx", "--opset", v], "--opset") for v in ("0", "999", "99", "-1", "x")),
    *((["bench", "m", "--iters", v], "--iters") for v in ("0", "-3")),
    *((["bench", "m", "--batch-size", v], "--batch-size") for v in ("0", "-1", "100000")),
    (["bench", "m", "--threads", "-1"], "--threads"),
]


@pytest.mark.parametrize("argv,flag", BAD, ids=[" ".join(a[-2:]) + f" ({a[0]})" for a, _ in BAD])
def test_a_bad_number_is_one_line_with_exit_2(argv: list[str], flag: str, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    err = capsys.readouterr().err.strip()
    assert exit_.value.code == 2
    assert len(err.splitlines()) == 1 and flag in err and f"{argv[-1]} is not allowed" in err and "expected" in err


def test_export_refuses_an_unknown_suffix_before_loading(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["export", "no_such_model", "--out", str(tmp_path / "x.txt")]) == 2
    err = capsys.readouterr().err
    assert "'.txt'" in err and ".onnx (onnx)" in err and ".pt2 (torch-export)" in err and "Unknown model" not in err
    assert not (tmp_path / "x.txt").exists()


def test_export_model_refuses_an_opset_the_exporter_cannot_write(tmp_path: Path) -> None:
    model = vitkit.create_model("vit_tiny_patch16_224", depth=1, img_size=32)
    with pytest.raises(ConfigError, match="opset=99 is not supported"):
        export_model(model, tmp_path / "m.onnx", opset=99)


def test_attention_library_refuses_an_alpha_outside_0_1() -> None:
    from vitkit.attention import save_attention_map

    with pytest.raises(ConfigError, match="alpha=2"):
        save_attention_map("x.png", "o.png", model="vit_tiny_patch16_224", alpha=2)


def test_prediction_output_escapes_formulas_and_survives_lone_surrogates(tmp_path: Path) -> None:
    results = [ImagePredictions("a.png", [Prediction(0, '=HYPERLINK("http://x")', 0.6),
                                          Prediction(1, "\ud800", 0.3), Prediction(2, "plain", 0.1)])]
    rows = list(csv.reader(save_predictions(results, tmp_path / "p.csv").open(encoding="utf-8")))
    assert [r[3] for r in rows[1:]] == ['\'=HYPERLINK("http://x")', "\\ud800", "plain"]
    assert json.loads(save_predictions(results, tmp_path / "p.json").read_text())[0]["predictions"][1]["label"] \
        == "\ud800"
    format_predictions(results).encode("utf-8")  # printable on a UTF-8 terminal
