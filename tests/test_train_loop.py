"""The fine-tuning loop on the bundled digits with a tiny ViT: outputs, eval parity, freezing, resuming, NaNs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import vitkit
from test_train_common import STEPS_PER_EPOCH, TINY, one_thread, weights  # noqa: F401 (fixture)
from vitkit.errors import CheckpointError
from vitkit.training import NonFiniteLossError, evaluate, train
from vitkit.training.checkpoint import load_state
from vitkit.training.setup import build_model

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory, one_thread: None) -> Path:  # noqa: F811
    """Three deterministic epochs, run through without interruption (with plots and samples)."""
    out = tmp_path_factory.mktemp("run")
    train(**{**TINY, "plots": True, "export_samples": 1}, epochs=3, deterministic=True, out=str(out))
    return out


def test_a_run_writes_metrics_checkpoints_plots_samples_and_report(finished: Path):
    assert not torch.are_deterministic_algorithms_enabled()  # the run's settings do not outlive it
    report = json.loads((finished / "report.json").read_text())
    assert report["completed"] and report["epochs"] == 3 and report["steps"] == 3 * STEPS_PER_EPOCH
    rows = [json.loads(line) for line in (finished / "metrics.jsonl").read_text().splitlines()]
    assert report["final_val_top1"] == rows[-1]["val_top1"] > 0.3  # 3 tiny epochs; chance is 0.1
    assert report["best_val_top1"] == max(r["val_top1"] for r in rows)
    assert report["summary"]["trainable_params"] == report["summary"]["params"]
    for key in ("best", "last", "state"):
        assert Path(report["checkpoints"][key]).exists()
    rows = [json.loads(line) for line in (finished / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3] and rows[-1]["train_loss"] < rows[0]["train_loss"]
    assert {"train_loss", "val_loss", "val_top1", "val_top5", "images_per_sec", "lr"} <= set(rows[0])
    assert (finished / "metrics.csv").read_text().splitlines()[0].startswith("epoch,step,lr,train_loss")
    for name in ("loss.png", "accuracy.png", "confusion_matrix.png"):
        assert (finished / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in (finished / "samples").glob("*.png")) == [f"{d}_0.png" for d in range(10)]
    model = vitkit.from_pretrained(finished / "best")
    assert model.num_classes == 10 and model.pretrained_cfg.label_names == "digits"


def test_eval_of_the_last_checkpoint_equals_the_last_epoch(finished: Path):
    report = json.loads((finished / "report.json").read_text())
    result = evaluate(str(finished / "last"))
    assert result["val_top1"] == report["final_val_top1"]
    assert result["val_loss"] == pytest.approx(report["final_val_loss"], rel=1e-5)
    assert sum(map(sum, result["confusion"])) == result["val_images"] == 359


def test_resume_after_an_interruption_ends_with_the_sameweights(finished: Path, tmp_path: Path):
    stop = STEPS_PER_EPOCH + 7  # in the middle of the second epoch
    partial = train(**TINY, epochs=3, deterministic=True, out=str(tmp_path), max_steps=stop)
    assert not partial.completed
    state = load_state(tmp_path / "checkpoint.pt")
    assert (state["progress"]["epoch"], state["progress"]["batch"], state["progress"]["step"]) == (1, 7, stop)
    resumed = train(**TINY, epochs=3, deterministic=True, out=str(tmp_path), resume="auto")
    assert resumed.completed and resumed.report["steps"] == 3 * STEPS_PER_EPOCH
    a, b = weights(finished / "last"), weights(tmp_path / "last")
    assert all(torch.equal(a[k], b[k]) for k in a)
    first = json.loads((finished / "report.json").read_text())
    assert resumed.final_val_top1 == first["final_val_top1"]
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    first_rows = [json.loads(line) for line in (finished / "metrics.jsonl").read_text().splitlines()]
    timing = ("images_per_sec", "epoch_time_s")
    assert [{k: v for k, v in r.items() if k not in timing} for r in rows] == \
        [{k: v for k, v in r.items() if k not in timing} for r in first_rows]


def test_resume_refuses_a_checkpoint_of_another_architecture(tmp_path: Path):
    train(**TINY, epochs=1, out=str(tmp_path), max_steps=1)
    other = {**TINY, "model_overrides": {**TINY["model_overrides"], "embed_dim": 48}}
    with pytest.raises(CheckpointError, match="another architecture.*embed_dim"):
        train(**other, epochs=1, out=str(tmp_path), resume="auto")
    (tmp_path / "broken.pt").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="cannot be read"):
        train(**TINY, epochs=1, out=str(tmp_path), resume=str(tmp_path / "broken.pt"))


def test_a_non_finite_loss_stops_with_the_last_good_checkpoint_intact(tmp_path: Path):
    with pytest.raises(NonFiniteLossError, match="intact.*resume='auto'") as exc:
        train(**{**TINY, "lr": 1e30, "warmup_epochs": 0.0}, epochs=1, out=str(tmp_path), clip_grad=None,
              save_every_steps=1)
    assert "--" not in str(exc.value)  # a Python caller is told the settings' names, not the CLI's flags
    state = load_state(tmp_path / "checkpoint.pt")
    assert state["progress"]["step"] >= 1
    assert all(torch.isfinite(t).all() for t in state["model"].values())


@pytest.mark.parametrize("freeze, trained", [("backbone", ["head.weight", "head.bias"]),
                                             ("blocks:1", ["blocks.1.", "fc_norm.", "head."])])
def test_freezing_trains_only_what_it_says(tmp_path: Path, freeze: str, trained: list[str]):
    result = train(**TINY, epochs=1, out=str(tmp_path), freeze=freeze, max_steps=2)
    state = load_state(tmp_path / "checkpoint.pt")
    expected = {n: t for n, t in state["model"].items() if any(n.startswith(p) for p in trained)}
    assert result.report["summary"]["trainable_params"] == sum(t.numel() for t in expected.values())
    assert sum(len(g["params"]) for g in state["optimizer"]["param_groups"]) == len(expected)


def test_gradient_accumulation_gives_the_same_updates(tmp_path: Path):
    for accum in (1, 4):
        train(**TINY, epochs=1, out=str(tmp_path / str(accum)), accum_steps=accum, max_steps=4, deterministic=True)
    a = load_state(tmp_path / "1" / "checkpoint.pt")["model"]
    b = load_state(tmp_path / "4" / "checkpoint.pt")["model"]
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-5, rtol=1e-4, msg=k)


def test_bf16_autocast_trains(tmp_path: Path):
    result = train(**TINY, epochs=1, out=str(tmp_path), precision="bf16", max_steps=3)
    assert not result.completed and result.report["steps"] == 3
    assert all(torch.isfinite(t).all() for t in load_state(tmp_path / "checkpoint.pt")["model"].values())


def test_models_from_weights_saved_folders_and_config_files(finished: Path, tmp_path: Path):
    saved = vitkit.from_pretrained(finished / "best").state_dict()
    from_weights = build_model("vit_digits", num_classes=3, weights=str(finished / "best"),
                               overrides=TINY["model_overrides"])
    for model in (from_weights, build_model(str(finished / "best"), num_classes=3)):
        assert model.num_classes == 3 and model.head.weight.shape == (3, 64)
        assert torch.equal(model.state_dict()["blocks.1.mlp.fc2.weight"], saved["blocks.1.mlp.fc2.weight"])
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps({"img_size": 32, "patch_size": 8, "embed_dim": 32, "depth": 1, "num_heads": 2}))
    model = build_model(str(config), num_classes=4)
    assert model.num_classes == 4 and len(model.blocks) == 1
