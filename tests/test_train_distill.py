"""Distillation from a teacher: DeiT's losses by hand, the teacher's preprocessing, a dist head that learns the
teacher (not the labels), a teacher that stays frozen in eval mode."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import vitkit
from test_train_common import TINY, TINY_MODEL, one_thread  # noqa: F401 (fixture)
from vitkit.data.datasets import load_splits
from vitkit.errors import ConfigError
from vitkit.training import TrainConfig
from vitkit.training.distill import Teacher, distillation_loss
from vitkit.training.distributed import Dist
from vitkit.training.loop import Trainer

pytestmark = pytest.mark.usefixtures("one_thread")
STUDENT = {**TINY_MODEL, "distilled": True, "global_pool": "token"}
ALWAYS = 3  # the class the teacher below always predicts


def _log_softmax(z: torch.Tensor) -> torch.Tensor:
    return z - z.exp().sum(dim=1, keepdim=True).log()


@pytest.mark.parametrize("distilled", [True, False])
def test_losses_equal_the_deit_formulas_by_hand(distilled: bool):
    gen = torch.Generator().manual_seed(0)
    cls, dist, teacher = (torch.randn(4, 5, generator=gen) for _ in range(3))
    y = torch.tensor([0, 3, 1, 4])
    out = (cls, dist) if distilled else cls
    kd_logits = dist if distilled else cls
    ce = -_log_softmax(cls)[torch.arange(4), y].mean()
    tau, alpha = 2.0, 0.3
    log_p_t, log_p_s = _log_softmax(teacher / tau), _log_softmax(kd_logits / tau)
    soft = (log_p_t.exp() * (log_p_t - log_p_s)).sum() * tau * tau / kd_logits.numel()
    hard = -_log_softmax(kd_logits)[torch.arange(4), teacher.argmax(1)].mean()
    for mode, kd in (("soft", soft), ("hard", hard)):
        got = distillation_loss(out, y, teacher, mode=mode, alpha=alpha, tau=tau, label_smoothing=0.0)
        torch.testing.assert_close(got, (1 - alpha) * ce + alpha * kd, atol=1e-6, rtol=1e-6)


def test_the_teacher_sees_the_batch_at_its_own_size_and_normalisation():
    student = vitkit.create_model("vit_digits", **TINY_MODEL)  # 32 pixels, mean = std = 0.5
    teacher_model = vitkit.create_model("vit_digits", **TINY_MODEL, img_size=48)
    teacher_model.pretrained_cfg = teacher_model.pretrained_cfg.replace(mean=(0.2, 0.3, 0.4), std=(0.1, 0.2, 0.3))
    teacher = Teacher(teacher_model, student, torch.device("cpu"))
    grey = torch.full((1, 3, 32, 32), 0.6)  # pixel value 0.6, as the student normalises it
    x = teacher.prepare((grey - 0.5) / 0.5)
    expected = (0.6 - torch.tensor([0.2, 0.3, 0.4])) / torch.tensor([0.1, 0.2, 0.3])
    assert x.shape == (1, 3, 48, 48)
    torch.testing.assert_close(x[0, :, 20, 20], expected, atol=1e-5, rtol=0)


@pytest.fixture(scope="module")
def constant_teacher(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A saved model that calls every image class 3, whatever the label."""
    model = vitkit.create_model("vit_digits", **TINY_MODEL)
    with torch.no_grad():
        model.head.weight.zero_()
        model.head.bias.zero_()
        model.head.bias[ALWAYS] = 10.0
    folder = tmp_path_factory.mktemp("teacher") / "always3"
    vitkit.save_pretrained(model, folder, format="vitkit")
    return folder


def test_the_distillation_head_learns_the_teacher_and_the_teacher_stays_frozen(constant_teacher: Path,
                                                                               tmp_path: Path):
    cfg = TrainConfig(**{**TINY, "model_overrides": STUDENT}, epochs=1, out=str(tmp_path),
                      teacher=str(constant_teacher), distill="hard", distill_alpha=0.5).resolved()
    trainer = Trainer(cfg, Dist())
    before = {k: v.clone() for k, v in trainer.teacher.model.state_dict().items()}
    trainer.model.eval()  # the loop sets the student's mode; the teacher's must not follow it
    assert trainer.train_epoch()
    teacher = trainer.teacher.model
    assert not teacher.training and all(p.grad is None and not p.requires_grad for p in teacher.parameters())
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())
    val = load_splits(None).val
    x = torch.stack([trainer.eval_tf(val.load(i), 0, i) for i in range(len(val))])
    trainer.model.train()
    with torch.no_grad():
        cls, dist = trainer.model(x)
    assert (dist.argmax(1) == ALWAYS).float().mean() > 0.95  # the teacher's answer; the labels give 3 to 10%
    assert (cls.argmax(1) == ALWAYS).float().mean() < 0.5  # the class head follows the labels, not the teacher


def test_a_teacher_must_have_weights_and_the_data_classes(tmp_path: Path):
    with pytest.raises(ConfigError, match="without weights: a teacher with random weights"):
        Trainer(TrainConfig(**TINY, epochs=1, out=str(tmp_path), teacher="vit_digits").resolved(), Dist())
    four = tmp_path / "four"
    vitkit.save_pretrained(vitkit.create_model("vit_digits", **TINY_MODEL, num_classes=4), four, format="vitkit")
    with pytest.raises(ConfigError, match="does not fit the data.*predicts 4 classes"):
        Trainer(TrainConfig(**TINY, epochs=1, out=str(tmp_path), teacher=str(four)).resolved(), Dist())
