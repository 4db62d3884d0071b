"""Knowledge distillation from a teacher (DeiT, Touvron et al. 2021), in the training loss.

A distilled student (``distilled=True``) returns ``(cls_logits, dist_logits)`` in training; the class head
learns the labels and the distillation head learns the teacher:

- soft: ``(1 - a) * CE(cls, y) + a * tau^2 * KL(softmax(teacher / tau) || softmax(dist / tau))``
  (KL summed, divided by the number of logits, as DeiT's ``DistillationLoss``);
- hard: ``(1 - a) * CE(cls, y) + a * CE(dist, argmax teacher)``.

A student without a distillation head distils through its only logits (plain logit distillation). The
teacher runs in eval mode without gradients on the student's augmented (and mixed) batch, converted to
the teacher's input size and normalisation when they differ.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError, DataError, keyword
from ..registry import is_registered
from .setup import build_model, check_model_classes

logger = logging.getLogger(__name__)

def _pcfg_norm(model: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    pcfg = model.pretrained_cfg
    return torch.tensor(pcfg.mean).view(1, -1, 1, 1), torch.tensor(pcfg.std).view(1, -1, 1, 1)


class Teacher:
    """A frozen model in eval mode that scores the student's batches; ``teacher(x) -> logits`` (no grad)."""

    def __init__(self, model: nn.Module, student: nn.Module, device: torch.device) -> None:
        self.model = model.to(device).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.size = tuple(model.config.img_size)
        self.resize = self.size != tuple(student.config.img_size)
        (s_mean, s_std), (t_mean, t_std) = _pcfg_norm(student), _pcfg_norm(model)
        self.renormalise = not (torch.equal(s_mean, t_mean) and torch.equal(s_std, t_std))
        # student-normalised x -> teacher-normalised: (x * s_std + s_mean - t_mean) / t_std
        self.scale = (s_std / t_std).to(device)
        self.shift = ((s_mean - t_mean) / t_std).to(device)

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """The student's batch (B, C, h, w) in the teacher's normalisation and size (B, C, H, W)."""
        if self.renormalise:
            x = x * self.scale + self.shift
        if self.resize:
            x = F.interpolate(x, size=self.size, mode="bicubic", align_corners=False, antialias=True)
        return x

    @torch.no_grad()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.model.eval()  # whatever the caller did to the student, the teacher stays in eval mode
        out = self.model(self.prepare(x))
        return (out[0] + out[1]) / 2 if isinstance(out, tuple) else out  # a distilled teacher: both heads


def load_teacher(spec: str, weights: str | None, student: nn.Module, classes: list[str],
                 device: torch.device) -> Teacher:
    """The teacher ``spec`` (registry name with ``weights``, saved folder or checkpoint), checked against the data."""
    if weights is None and is_registered(spec):
        hints = keyword("teacher", spec), keyword("teacher_weights", "SRC", typed="SRC"), keyword("teacher")
        raise ConfigError(f"{hints[0]} is a registry name without weights: a teacher with random weights teaches "
                          f"nothing. Pass {hints[1]}, or {hints[2]} a trained model folder (e.g. runs/digits/best).",
                          hints=hints)
    model = build_model(spec, num_classes=None, weights=weights)
    try:
        check_model_classes(model, classes)
    except DataError as exc:
        teacher = keyword("teacher", spec)
        raise ConfigError(f"{teacher} does not fit the data: {exc} A teacher must predict the data's classes (e.g. "
                          f"a model trained on them).", hints=(teacher,)) from None
    logger.info("teacher %s: %d classes at %s", spec, model.num_classes, tuple(model.config.img_size))
    return Teacher(model, student, device)


def distillation_loss(out: Any, target: torch.Tensor, teacher_logits: torch.Tensor, *, mode: str, alpha: float,
                      tau: float, label_smoothing: float) -> torch.Tensor:
    """DeiT's loss (see the module docstring); ``target``: class indices (B,) or soft targets (B, K) (mixup)."""
    cls, dist = out if isinstance(out, tuple) else (out, out)
    smoothing = 0.0 if target.ndim == 2 else label_smoothing  # soft targets carry their smoothing
    base = F.cross_entropy(cls.float(), target, label_smoothing=smoothing)
    dist, teacher_logits = dist.float(), teacher_logits.float()
    if mode == "soft":
        kd = F.kl_div(F.log_softmax(dist / tau, dim=1), F.log_softmax(teacher_logits / tau, dim=1),
                      reduction="sum", log_target=True) * (tau * tau) / dist.numel()
    else:
        kd = F.cross_entropy(dist, teacher_logits.argmax(dim=1))
    return base * (1.0 - alpha) + kd * alpha
