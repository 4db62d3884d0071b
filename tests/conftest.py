"""Shared fixtures: the reference libraries (test-only) and real photos."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from _refs import import_timm, import_transformers


@pytest.fixture(scope="session")
def timm():
    return import_timm()


@pytest.fixture(scope="session")
def transformers():
    return import_transformers()


@pytest.fixture(scope="session")
def photos() -> dict[str, np.ndarray]:
    """Real RGB photos (H, W, 3) uint8 from scikit-image and scikit-learn."""
    import skimage.data
    from sklearn.datasets import load_sample_images

    out = {name: getattr(skimage.data, name)() for name in ("chelsea", "coffee", "astronaut", "rocket")}
    for i, img in enumerate(load_sample_images().images):
        out[f"sklearn_{i}"] = img
    return out


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    np.random.seed(0)
