"""Fine-tuning at native resolution: images of different shapes batched as padded patch sequences with masks,
the augmentation applied to the image before it is cut into patches, and the exports running natively."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from PIL import Image

import vitkit
from test_train_common import TINY_MODEL, one_thread  # noqa: F401 (fixture)
from test_weights_refs import randomize
from vitkit.cli import main
from vitkit.data.datasets import collate_skipping
from vitkit.data.digits import load_digits_images
from vitkit.errors import ConfigError
from vitkit.patches import PatchProcessor
from vitkit.training import train
from vitkit.training.config import AugmentSettings
from vitkit.training.setup import EvalTransform, stack_patches, train_transform

pytestmark = pytest.mark.usefixtures("one_thread")
SHAPES = [(32, 32), (48, 24), (24, 48), (40, 30)]  # (width, height): square, wide, tall, 4:3
NATIVE = dict(model="vit_digits", model_overrides=TINY_MODEL, batch_size=8, eval_batch_size=64, lr=3e-3,
              warmup_epochs=0.5, plots=False, export_samples=0, max_patches=12)


@pytest.fixture(scope="module")
def mixed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three classes of digits, 16 each, saved at four aspect ratios."""
    root = tmp_path_factory.mktemp("mixed_aspects")
    counts: dict[int, int] = {}
    for img, label in zip(*load_digits_images(32)):
        if label in (0, 1, 7) and counts.get(label, 0) < 16:
            k = counts[label] = counts.get(label, 0) + 1
            (root / str(label)).mkdir(exist_ok=True)
            img.convert("RGB").resize(SHAPES[k % 4]).save(root / str(label) / f"{k}.png")
    return root


def test_train_cli_with_max_patches_trains_on_mixed_aspects_and_best_predicts_natively(mixed, tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["train", str(mixed), "--model", "vit_digits", *(a for k, v in TINY_MODEL.items()
                                                                   for a in ("--set", f"{k}={v}")),
                 "--batch-size", "8", "--epochs", "1", "--max-patches", "12", "--out", str(out), "--no-plots"])
    assert code == 0
    assert "each image's own aspect ratio, up to 12 patches" in capsys.readouterr().out
    report = json.loads((out / "report.json").read_text())
    assert report["config"]["max_patches"] == 12 and report["summary"]["max_patches"] == 12
    row = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    assert math.isfinite(row["train_loss"]) and math.isfinite(row["val_loss"]) and row["val_images"] == 9
    best = vitkit.from_pretrained(out / "best")
    assert best.pretrained_cfg.max_num_patches == 12
    wide = Image.open(next((mixed / "1").glob("*.png")))
    batch = PatchProcessor.from_model(best)(wide)  # the image at its own aspect ratio, within 12 patches
    grid = tuple(batch.grids[0].tolist())
    assert grid[0] * grid[1] <= 12
    with torch.no_grad():
        want = best(batch).softmax(-1)[0]
    got = vitkit.predict([wide], out / "best", top_k=3)[0]  # no max_patches: the export says so
    assert [p.index for p in got.top_k] == want.argsort(descending=True).tolist()
    torch.testing.assert_close(torch.tensor([p.probability for p in got.top_k]), want.sort(descending=True).values,
                               atol=1e-5, rtol=1e-5)
    evaluated = vitkit.evaluate(str(out / "best"), str(mixed))  # natively too: the same figures as the run's
    assert evaluated["val_top1"] == report["final_val_top1"]
    assert evaluated["val_loss"] == pytest.approx(report["final_val_loss"], rel=1e-5)


def test_a_resumed_native_run_ends_with_the_weights_of_an_uninterrupted_one(mixed, tmp_path):
    whole = train(**NATIVE, data=str(mixed), epochs=2, deterministic=True, out=str(tmp_path / "whole"))
    part = train(**NATIVE, data=str(mixed), epochs=2, deterministic=True, out=str(tmp_path / "part"), max_steps=5)
    assert whole.completed and not part.completed
    resumed = train(**NATIVE, data=str(mixed), epochs=2, deterministic=True, out=str(tmp_path / "part"),
                    resume="auto")
    assert resumed.completed and resumed.report["steps"] == whole.report["steps"] == 8
    a = vitkit.from_pretrained(tmp_path / "whole" / "last").state_dict()
    b = vitkit.from_pretrained(tmp_path / "part" / "last").state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(ConfigError, match="max_patches: checkpoint 12, now 16"):
        train(**{**NATIVE, "max_patches": 16}, data=str(mixed), epochs=2, out=str(tmp_path / "part"), resume="auto")


def _model():
    model = randomize(vitkit.create_model("vit_digits", **TINY_MODEL, num_classes=3))
    model.pretrained_cfg = model.pretrained_cfg.replace(num_classes=3, label_names=None)
    return model


def test_the_training_augmentation_keeps_aspect_and_is_seeded_per_image_and_epoch():
    model = _model()
    aug = AugmentSettings(aug="trivial", hflip=0.5, crop_scale=(0.5, 1.0), crop_ratio=(0.9, 1.1))
    tf = train_transform(model, aug, seed=3, max_patches=24)
    wide = Image.effect_noise((120, 40), 60).convert("RGB")  # 3:1
    patches, grid = tf(wide, 0, 5)
    again, grid_again = tf(wide, 0, 5)
    assert torch.equal(patches, again) and grid == grid_again  # the same (seed, epoch, index): the same sample
    assert grid[0] * grid[1] == patches.shape[0] <= 24 and patches.shape[1] == 8 * 8 * 3
    grids = {tf(wide, epoch, 5)[1] for epoch in range(8)}
    assert all(w / h > 1.5 for h, w in grids)  # crops of a wide image stay wide (aspect relative to the image)
    assert len({tf(wide, epoch, 5)[0].sum().item() for epoch in range(4)}) == 4  # another epoch, another draw
    # with no randomness left, the training sample is exactly the evaluation preprocessing
    plain = train_transform(model, AugmentSettings(aug="none", hflip=0.0, crop_scale=(1.0, 1.0),
                                                   crop_ratio=(1.0, 1.0)), seed=0, max_patches=24)
    eval_patches, eval_grid = EvalTransform(model, max_patches=24)(wide, 0, 0)
    got, got_grid = plain(wide, 0, 0)
    assert got_grid == eval_grid and torch.equal(got, eval_patches)


def test_padding_in_a_training_batch_never_changes_a_result():
    model = _model().eval()
    tf = EvalTransform(model, max_patches=20)
    small = tf(Image.effect_noise((16, 40), 50).convert("RGB"), 0, 0)  # tall: fewer patches
    big = tf(Image.effect_noise((64, 48), 50).convert("RGB"), 0, 1)
    assert small[0].shape[0] < big[0].shape[0]
    alone, _, _ = collate_skipping([(small, 0, 0)], stack=stack_patches)
    together, labels, _ = collate_skipping([(big, 1, 0), (small, 0, 0)], stack=stack_patches)
    assert together.patches.shape[1] == big[0].shape[0] and bool(together.mask[1, -1]) is False
    with torch.no_grad():
        torch.testing.assert_close(model(together)[1], model(alone)[0], atol=1e-5, rtol=1e-5)
    assert labels.tolist() == [1, 0]


@pytest.mark.parametrize("settings, message", [
    (dict(max_patches=0), "max_patches=0 is not allowed: expected None or a positive integer"),
    (dict(max_patches=12, mixup=0.2), "mixup=0.2 mixes images pixel by pixel"),
    (dict(max_patches=12, teacher="vit_digits"), "teacher='vit_digits' scores the student's batch"),
])
def test_native_settings_that_cannot_work_are_refused(settings, message, tmp_path):
    with pytest.raises(ConfigError, match=message):
        train(**{**NATIVE, **settings}, data="digits", epochs=1, out=str(tmp_path))


def test_a_model_with_non_square_patches_is_refused(mixed, tmp_path):
    with pytest.raises(ConfigError, match="square patches; this model's are 8x4"):
        train(**{**NATIVE, "model_overrides": {**TINY_MODEL, "patch_size": [8, 4]}}, data=str(mixed), epochs=1,
              out=str(tmp_path))


def test_cli_refuses_max_patches_zero_in_one_line(capsys):
    assert main(["train", "digits", "--max-patches", "0", "--out", "x"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--max-patches 0" in err
