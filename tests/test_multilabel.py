"""Multi-label losses (against timm's ASL) and metrics (against scikit-learn)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, f1_score

from vitkit.errors import ConfigError
from vitkit.multilabel import (
    AsymmetricLoss,
    BCEWithLogits,
    MultiLabelMeter,
    average_precision,
    f1_scores,
    multilabel_loss,
    multilabel_metrics,
)


def _batch(n: int = 64, k: int = 7, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    targets = (torch.rand(n, k, generator=gen) < 0.3).float()
    logits = torch.randn(n, k, generator=gen) * 2 + targets * 1.5  # informative but imperfect
    return logits, targets


@pytest.mark.parametrize("kw", [dict(), dict(gamma_neg=2, gamma_pos=0, clip=0), dict(gamma_neg=0, gamma_pos=0,
                                                                                        clip=0.1)])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_asl_matches_timm(timm, kw, reduction):
    from timm.loss import AsymmetricLossMultiLabel

    logits, targets = _batch()
    ours_in = logits.clone().requires_grad_(True)
    ref_in = logits.clone().requires_grad_(True)
    ours = AsymmetricLoss(**kw, reduction=reduction)(ours_in, targets)
    ref = AsymmetricLossMultiLabel(**kw, reduction=reduction)(ref_in, targets)
    torch.testing.assert_close(ours, ref, rtol=1e-6, atol=1e-6)
    ours.backward()
    ref.backward()
    torch.testing.assert_close(ours_in.grad, ref_in.grad, rtol=1e-5, atol=1e-7)


def test_asl_detached_focal_weight_matches_timm(timm):
    from timm.loss import AsymmetricLossMultiLabel

    logits, targets = _batch(seed=3)
    a, b = logits.clone().requires_grad_(True), logits.clone().requires_grad_(True)
    AsymmetricLoss(detach_focal_weight=True)(a, targets).backward()
    AsymmetricLossMultiLabel(disable_torch_grad_focal_loss=True, reduction="mean")(b, targets).backward()
    torch.testing.assert_close(a.grad, b.grad, rtol=1e-5, atol=1e-7)


def test_asl_without_focusing_or_clipping_is_bce():
    logits, targets = _batch()
    asl = AsymmetricLoss(gamma_neg=0, gamma_pos=0, clip=0)(logits, targets)
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, targets)
    torch.testing.assert_close(asl, bce, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_bce_with_label_smoothing_matches_timm(timm, eps):
    from timm.loss import AsymmetricLossMultiLabel

    logits, targets = _batch(seed=1)
    ours = BCEWithLogits(label_smoothing=eps)(logits, targets)
    # timm's ASL without focusing or clipping is BCE, with the same smoothing towards 1/2
    ref = AsymmetricLossMultiLabel(gamma_neg=0, gamma_pos=0, clip=0, smoothing=eps, reduction="mean")(logits, targets)
    torch.testing.assert_close(ours, ref, rtol=1e-6, atol=1e-6)
    if eps:
        assert ours > BCEWithLogits()(logits, targets)  # smoothing penalises confident right answers


def test_losses_reject_bad_settings_and_shapes():
    with pytest.raises(ConfigError, match="label_smoothing=1.0"):
        BCEWithLogits(label_smoothing=1.0)
    with pytest.raises(ConfigError, match="gamma_neg=-1"):
        AsymmetricLoss(gamma_neg=-1)
    with pytest.raises(ConfigError, match="Unknown multi-label loss 'focal'"):
        multilabel_loss("focal")
    with pytest.raises(ConfigError, match=r"\(batch, classes\)"):
        BCEWithLogits()(torch.zeros(4, 3), torch.zeros(4))
    assert isinstance(multilabel_loss("asl", gamma_neg=2), AsymmetricLoss)


def test_average_precision_matches_sklearn_per_class_and_with_ties():
    logits, targets = _batch(n=200, k=6)
    scores = torch.sigmoid(logits)
    scores[:, 2] = torch.round(scores[:, 2] * 4) / 4  # many tied scores in one class
    ap = average_precision(scores, targets)
    expected = [average_precision_score(targets[:, j].numpy(), scores[:, j].numpy()) for j in range(6)]
    np.testing.assert_allclose(ap.numpy(), expected, rtol=0, atol=1e-12)
    metrics = multilabel_metrics(scores, targets)
    assert metrics["mAP"] == pytest.approx(average_precision_score(targets.numpy(), scores.numpy(), average="macro"),
                                           abs=1e-12)


def test_a_class_without_positives_is_left_out_of_map():
    logits, targets = _batch(n=50, k=4)
    targets[:, 3] = 0
    scores = torch.sigmoid(logits)
    metrics = multilabel_metrics(scores, targets)
    assert torch.isnan(average_precision(scores, targets)[3])
    assert metrics["classes_without_positives"] == 1
    expected = np.mean([average_precision_score(targets[:, j].numpy(), scores[:, j].numpy()) for j in range(3)])
    assert metrics["mAP"] == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("threshold", [0.3, 0.5, 0.8])
def test_f1_matches_sklearn(threshold):
    logits, targets = _batch(n=120, k=5, seed=4)
    targets[:, 4] = 0  # a class with no positives (its F1 is 0 where nothing is predicted)
    scores = torch.sigmoid(logits)
    ours = f1_scores(scores, targets, threshold)
    pred = (scores > threshold).numpy().astype(int)
    for avg in ("micro", "macro"):
        assert ours[f"f1_{avg}"] == pytest.approx(f1_score(targets.numpy(), pred, average=avg, zero_division=0),
                                                  abs=1e-12)


def test_meter_split_across_ranks_equals_one_process():
    logits, targets = _batch(n=90, k=6, seed=5)
    whole = MultiLabelMeter()
    for i in range(0, 90, 16):
        whole.update(logits[i:i + 16], targets[i:i + 16])
    # two "ranks" see interleaved rows; the gather concatenates what every rank holds
    ranks = [MultiLabelMeter(), MultiLabelMeter()]
    for r, meter in enumerate(ranks):
        meter.update(logits[r::2], targets[r::2])
    others = iter(ranks[1].tensors())  # compute gathers scores, then targets

    def gather(t: torch.Tensor) -> torch.Tensor:
        return torch.cat([t, next(others)])

    expected = whole.compute(0.5)
    assert ranks[0].compute(0.5, gather=gather) == pytest.approx(expected)
    assert expected["samples"] == 90 and 0.0 < expected["mAP"] < 1.0
    whole.reset()
    with pytest.raises(ConfigError, match="no batches"):
        whole.compute()
