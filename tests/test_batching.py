"""One batching path: predict and features read images through vitkit.batching (in order, the next batch in the
background, unreadable ones reported by index, float tensors passed as model inputs)."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

import vitkit
from vitkit import batching
from vitkit.errors import ImageError
from vitkit.processor import ImageProcessor


def test_batches_keep_order_and_report_unreadable_images_by_index(tmp_path):
    (tmp_path / "bad.png").write_bytes(b"not an image")
    images = [Image.new("RGB", (40, 30), (i * 40, 0, 0)) for i in range(5)]
    images[2] = str(tmp_path / "bad.png")
    images[4] = torch.zeros(3, 32, 32)  # preprocessed pixels: passed through as they are
    processor = ImageProcessor(size=32, resize_size=32)
    got = list(batching.batches(processor, images, batching.chunks(range(5), 2), workers=2))
    assert [b.number for b in got] == [0, 1, 2]
    assert [b.rows for b in got] == [[0, 1], [3], [4]]
    assert list(got[1].errors) == [2] and isinstance(got[1].errors[2], ImageError)
    assert got[0].pixels.shape == (2, 3, 32, 32) and torch.equal(got[2].pixels[0], images[4])
    assert torch.equal(got[0].pixels[1], processor.preprocess_one(images[1]))


@pytest.mark.parametrize("use", ["predict", "features"])
def test_the_uses_read_through_the_one_batching_path(monkeypatch, use):
    seen = []
    read = batching.read_one
    monkeypatch.setattr(batching, "read_one", lambda p, image: seen.append(image) or read(p, image))
    model = vitkit.create_model("vit_digits")
    images = [Image.new("RGB", (32, 32), (i, i, i)) for i in range(3)]
    if use == "predict":
        assert len(vitkit.predict(images, model, batch_size=2)) == 3
    else:
        assert vitkit.extract_features(images, model, batch_size=2).shape[0] == 3
    assert seen == images
