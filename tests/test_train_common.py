"""Settings shared by the training tests (this module holds no tests): a tiny ViT, one thread."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import vitkit

# A ViT small enough that an epoch over the 1,438 training digits takes well under a second
TINY_MODEL = dict(patch_size=8, embed_dim=64, depth=2, num_heads=2)
TINY = dict(model_overrides=TINY_MODEL, batch_size=32, eval_batch_size=256, plots=False, export_samples=0, lr=3e-3,
            warmup_epochs=0.5)
TINY_ARGS = ["--model", "vit_digits", *(a for k, v in TINY_MODEL.items() for a in ("--set", f"{k}={v}")),
             "--batch-size", "32", "--eval-batch-size", "256", "--lr", "3e-3", "--warmup-epochs", "0.5"]
STEPS_PER_EPOCH = 1438 // 32


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models run fastest on one thread, and do not collapse when other processes share the cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def weights(folder: Path) -> dict[str, torch.Tensor]:
    """The state dict of a model saved in vitkit's format."""
    return vitkit.from_pretrained(folder).state_dict()
