"""Multi-label classification: losses over independent sigmoid outputs, and their metrics.

Targets are multi-hot float tensors (B, K). Losses:

- ``BCEWithLogits``: binary cross-entropy per class, with optional label smoothing (targets pulled
  towards 1/2: ``t * (1 - eps) + eps / 2``);
- ``AsymmetricLoss`` (ASL, Ridnik et al. 2021, "Asymmetric Loss For Multi-Label Classification"):
  focusing ``gamma_neg`` on negatives and ``gamma_pos`` on positives, and probability shifting
  (``clip``) that discards easy negatives. With gamma_neg = gamma_pos = clip = 0 it equals BCE.

Metrics: ``mAP`` (mean over classes of average precision, as scikit-learn's ``average_precision_score``
computes it per class), and F1 at a threshold, micro (pooled over all class decisions) and macro (mean
of per-class F1, a class with no positives and no predictions counting 0, as sklearn's
``zero_division=0``). ``MultiLabelMeter`` accumulates scores and targets per epoch and computes at the
end; under DDP the caller passes a ``gather`` function that all-gathers a (n, K) tensor across ranks
(every metric here depends only on the set of (score, target) rows, not their order).

The ``vitkit train`` flags: ``--multi-label`` (implied by a label file with a ``labels`` column),
``--loss bce|asl`` (ASL with its published defaults: gamma_neg 4, gamma_pos 1, clip 0.05, which the library
function takes as arguments), ``--label-smoothing EPS`` (BCE), ``--threshold 0.5`` (F1 and predict). The loop calls
``loss_fn = multilabel_loss(name, ...)``, ``meter.update(logits, targets)`` per validation batch and
``meter.compute(threshold, gather=...)`` per epoch; the model records it with
``pretrained_cfg.replace(multi_label=True)`` so ``predict`` uses sigmoid scores.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .choices import MULTILABEL_LOSSES
from .errors import ConfigError

LOSSES = MULTILABEL_LOSSES


def _check_targets(logits: torch.Tensor, targets: torch.Tensor) -> None:
    if logits.shape != targets.shape or logits.ndim != 2:
        raise ConfigError(f"Multi-label logits and targets must both be (batch, classes); got {tuple(logits.shape)} "
                          f"and {tuple(targets.shape)}. Give multi-hot float targets, one column per class.")


def _reduce(loss: torch.Tensor, reduction: str) -> torch.Tensor:
    return loss.mean() if reduction == "mean" else loss.sum() if reduction == "sum" else loss


def _check_probability(name: str, value: float, top: float = 1.0) -> None:
    if not 0.0 <= value < top:
        raise ConfigError(f"{name}={value!r} is not allowed: expected a value in [0, {top:g}).")


class BCEWithLogits(nn.Module):
    """Binary cross-entropy on logits (B, K) against multi-hot targets (B, K), optionally label-smoothed.

    ``reduction``: 'mean' over all B*K terms (default), 'sum', or 'none'.
    """

    def __init__(self, *, label_smoothing: float = 0.0, reduction: str = "mean") -> None:
        super().__init__()
        _check_probability("label_smoothing", label_smoothing)
        _check_reduction(reduction)
        self.label_smoothing = label_smoothing
        self.reduction = reduction

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        _check_targets(logits, targets)
        t = targets.to(logits.dtype)
        if self.label_smoothing:
            t = t * (1.0 - self.label_smoothing) + 0.5 * self.label_smoothing
        return F.binary_cross_entropy_with_logits(logits, t, reduction=self.reduction)


class AsymmetricLoss(nn.Module):
    """ASL: ``-[y (1-p)^gp log p + (1-y) p_m^gn log(1-p_m)]`` with ``p_m = max(p - clip, 0)``.

    As the authors' reference code (and timm's ``AsymmetricLossMultiLabel``), with their defaults: the
    shifted negative probability is ``1 - p_m = min(1 - p + clip, 1)``, logs are clamped at ``eps``, the
    loss is computed in float32, and the focusing weight is differentiated through unless
    ``detach_focal_weight``. ``reduction='sum'`` is the authors' reduction; 'mean' (default) divides by
    B*K so the scale matches BCE's.
    """

    def __init__(self, *, gamma_neg: float = 4.0, gamma_pos: float = 1.0, clip: float = 0.05, eps: float = 1e-8,
                 detach_focal_weight: bool = False, reduction: str = "mean") -> None:
        super().__init__()
        for name, value in (("gamma_neg", gamma_neg), ("gamma_pos", gamma_pos)):
            if not value >= 0:
                raise ConfigError(f"{name}={value!r} is not allowed: expected a number >= 0 (ASL's defaults: "
                                  f"gamma_neg=4, gamma_pos=1).")
        _check_probability("clip", clip)
        _check_reduction(reduction)
        self.gamma_neg, self.gamma_pos, self.clip, self.eps = gamma_neg, gamma_pos, clip, eps
        self.detach_focal_weight = detach_focal_weight
        self.reduction = reduction

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        _check_targets(logits, targets)
        y = targets.float()
        p = torch.sigmoid(logits.float())  # low-precision probabilities underflow the eps clamp
        p_neg = 1.0 - p
        if self.clip > 0:
            p_neg = (p_neg + self.clip).clamp(max=1.0)  # probability shifting: easy negatives give zero loss
        loss = y * torch.log(p.clamp(min=self.eps)) + (1.0 - y) * torch.log(p_neg.clamp(min=self.eps))
        if self.gamma_neg > 0 or self.gamma_pos > 0:
            with torch.set_grad_enabled(torch.is_grad_enabled() and not self.detach_focal_weight):
                pt = p * y + p_neg * (1.0 - y)  # probability of the right answer
                weight = torch.pow(1.0 - pt, self.gamma_pos * y + self.gamma_neg * (1.0 - y))
            loss = loss * weight
        return _reduce(-loss, self.reduction)


def _check_reduction(reduction: str) -> None:
    if reduction not in ("mean", "sum", "none"):
        raise ConfigError(f"reduction={reduction!r} is not allowed: expected mean, sum or none.")


def multilabel_loss(name: str = "bce", *, label_smoothing: float = 0.0, gamma_neg: float = 4.0,
                    gamma_pos: float = 1.0, clip: float = 0.05) -> nn.Module:
    """The loss ``--loss`` names: 'bce' (with ``label_smoothing``) or 'asl' (with gammas and clip)."""
    if name == "bce":
        return BCEWithLogits(label_smoothing=label_smoothing)
    if name == "asl":
        return AsymmetricLoss(gamma_neg=gamma_neg, gamma_pos=gamma_pos, clip=clip)
    raise ConfigError(f"Unknown multi-label loss {name!r}: expected one of {', '.join(LOSSES)}.")


# ---------------------------------------------------------------------- metrics
def average_precision(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Average precision of each class, (K,), from scores (N, K) and binary targets (N, K).

    ``sum_k (R_k - R_{k-1}) P_k`` over the distinct score thresholds, highest first (tied scores form
    one threshold), as scikit-learn's ``average_precision_score``. A class with no positive gets NaN.
    """
    _check_targets(scores, targets)
    scores, targets = scores.double(), (targets > 0.5).double()
    order = torch.argsort(scores, dim=0, descending=True, stable=True)
    s = torch.gather(scores, 0, order)  # (N, K) sorted per class
    t = torch.gather(targets, 0, order)
    tp = t.cumsum(0)
    seen = torch.arange(1, len(s) + 1, dtype=torch.float64, device=s.device)[:, None].expand_as(s)
    # a threshold ends where the next score differs (or at the last row)
    last = torch.ones_like(s, dtype=torch.bool)
    last[:-1] = s[1:] != s[:-1]
    positives = t.sum(0)
    precision = tp / seen
    recall = tp / positives.clamp(min=1)
    # recall of the latest threshold at or before each row (recall never decreases), then of the one before
    end_recall = torch.where(last, recall, 0.0).cummax(dim=0).values
    prev_recall = torch.cat([torch.zeros_like(recall[:1]), end_recall[:-1]])
    ap = torch.where(last, (recall - prev_recall) * precision, 0.0).sum(0)  # (K,)
    return torch.where(positives > 0, ap, torch.full_like(ap, float("nan")))


def f1_scores(scores: torch.Tensor, targets: torch.Tensor, threshold: float = 0.5) -> dict[str, float]:
    """Micro and macro F1 of the decisions ``score > threshold`` against binary targets (N, K)."""
    _check_targets(scores, targets)
    pred, true = scores > threshold, targets > 0.5
    tp = (pred & true).sum(0).double()
    fp = (pred & ~true).sum(0).double()
    fn = (~pred & true).sum(0).double()
    denom = 2 * tp + fp + fn
    per_class = torch.where(denom > 0, 2 * tp / denom.clamp(min=1), torch.zeros_like(tp))
    micro_denom = float(denom.sum())
    return {"f1_micro": 2 * float(tp.sum()) / micro_denom if micro_denom else 0.0,
            "f1_macro": float(per_class.mean())}


def multilabel_metrics(scores: torch.Tensor, targets: torch.Tensor, threshold: float = 0.5) -> dict[str, Any]:
    """``mAP`` (over the classes with at least one positive), ``f1_micro``, ``f1_macro``, and counts.

    ``scores`` are probabilities (sigmoid of the logits), as the threshold is.
    """
    ap = average_precision(scores, targets)
    scored = ~torch.isnan(ap)
    return {"mAP": float(ap[scored].mean()) if scored.any() else float("nan"), **f1_scores(scores, targets, threshold),
            "classes_without_positives": int((~scored).sum()), "samples": int(scores.shape[0])}


Gather = Callable[[torch.Tensor], torch.Tensor]


class MultiLabelMeter:
    """Collects sigmoid scores and targets batch by batch; ``compute`` gives the epoch's metrics."""

    def __init__(self) -> None:
        self.scores: list[torch.Tensor] = []
        self.targets: list[torch.Tensor] = []

    def reset(self) -> None:
        self.scores.clear()
        self.targets.clear()

    @torch.no_grad()
    def update(self, logits: torch.Tensor, targets: torch.Tensor) -> None:
        """Add a batch: logits (B, K) and multi-hot targets (B, K). Kept on the CPU as float32."""
        _check_targets(logits, targets)
        self.scores.append(torch.sigmoid(logits.detach().float()).cpu())
        self.targets.append(targets.detach().float().cpu())

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(scores (N, K), targets (N, K)) seen so far on this process."""
        if not self.scores:
            raise ConfigError("MultiLabelMeter has no batches: call update(logits, targets) before compute().")
        return torch.cat(self.scores), torch.cat(self.targets)

    def compute(self, threshold: float = 0.5, *, gather: Gather | None = None) -> dict[str, Any]:
        """The metrics over everything seen; ``gather`` (DDP) maps this rank's (n, K) rows to all ranks' rows."""
        scores, targets = self.tensors()
        if gather is not None:
            scores, targets = gather(scores), gather(targets)
        return multilabel_metrics(scores, targets, threshold)
