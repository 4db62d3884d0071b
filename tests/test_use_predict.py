"""`predict` end to end through the CLI on real photos: random-init and saved-and-reloaded models."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

import vitkit
from vitkit import create_model
from vitkit.cli import main
from vitkit.errors import DataError, VitkitError
from vitkit.labels import labels_for_model, load_labels
from vitkit.predict import predict
from vitkit.processor import ImageProcessor


@pytest.fixture(scope="module")
def photo_files(photos, tmp_path_factory) -> list[str]:
    folder = tmp_path_factory.mktemp("photos")
    paths = []
    for name in ("chelsea", "coffee", "astronaut"):
        path = folder / f"{name}.jpg"
        Image.fromarray(photos[name]).save(path, quality=95)
        paths.append(str(path))
    return paths


def _cli_json(capsys, *args: str) -> list[dict]:
    assert main(["predict", *args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_imagenet_labels_ship_with_the_package():
    names = load_labels("imagenet-1k")
    assert len(names) == 1000 and len(set(names)) == 1000
    assert names[0] == "tench" and names[281] == "tabby" and names[999] == "toilet tissue"
    assert load_labels("digits") == [str(i) for i in range(10)]


def test_cli_random_init_model(capsys, photo_files):
    out = _cli_json(capsys, *photo_files, "--model", "vit_tiny_patch16_224", "--top-k", "3")
    assert [r["image"] for r in out] == photo_files
    imagenet = load_labels("imagenet-1k")
    for r in out:
        preds = r["predictions"]
        assert len(preds) == 3
        assert all(p["label"] == imagenet[p["index"]] for p in preds)
        probs = [p["probability"] for p in preds]
        # a softmax over 1000 classes of a random head: each near 1/1000 (a sigmoid would give ~0.5 each)
        assert probs == sorted(probs, reverse=True) and 0 < sum(probs) < 0.1
    assert main(["predict", photo_files[0], "--model", "vit_digits", "--top-k", "2"]) == 0
    text = capsys.readouterr().out.splitlines()
    assert text[0] == photo_files[0] and len(text) == 3 and "%" in text[1]


def test_saved_and_reloaded_model_gives_the_same_answer(capsys, photo_files, tmp_path):
    model = create_model("vit_tiny_patch16_224", depth=2, num_classes=10).eval()
    vitkit.save_pretrained(model, tmp_path / "saved")
    labels = tmp_path / "classes.txt"
    labels.write_text("\n".join(f"thing {i}" for i in range(10)))
    out = _cli_json(capsys, *photo_files, "--model", str(tmp_path / "saved"), "--class-names", str(labels))
    assert _cli_json(capsys, *photo_files, "--model", str(tmp_path / "saved"), "--labels", str(labels)) == out
    with torch.no_grad():
        probs = model(ImageProcessor.from_model(model)(photo_files)).softmax(-1)
    for r, p in zip(out, probs):
        top = p.topk(5)
        assert [x["index"] for x in r["predictions"]] == top.indices.tolist()
        assert [x["label"] for x in r["predictions"]] == [f"thing {i}" for i in top.indices.tolist()]
        torch.testing.assert_close(torch.tensor([x["probability"] for x in r["predictions"]]), top.values)


def test_distilled_and_siglip_models(photo_files):
    deit = create_model("deit_tiny_distilled_patch16_224", depth=2)
    res = predict(photo_files[:2], deit, top_k=2, batch_size=1)
    assert len(res) == 2 and res[0].top_k[0].label in load_labels("imagenet-1k")
    deit.train()  # training mode returns (logits, logits_dist); predict evaluates anyway
    assert predict(photo_files[0], deit, top_k=1)[0].top_k[0].index == res[0].top_k[0].index
    siglip = create_model("vit_base_patch16_siglip_224", depth=1, embed_dim=192, num_heads=3, num_classes=1000)
    res = predict(photo_files[0], siglip, top_k=3)
    assert len(res[0].top_k) == 3 and res[0].top_k[0].label in load_labels("imagenet-1k")
    tower = create_model("vit_base_patch16_siglip_224", depth=1, embed_dim=192, num_heads=3)
    with pytest.raises(VitkitError, match="no classification head"):
        predict(photo_files[0], tower)


def test_label_errors(tmp_path):
    model = create_model("vit_digits")
    assert labels_for_model(model) == [str(i) for i in range(10)]
    assert labels_for_model(create_model("vit_digits", num_classes=3)) == ["class_0", "class_1", "class_2"]
    (tmp_path / "few.txt").write_text("a\nb\n")
    with pytest.raises(DataError, match="2 labels were given but the model predicts 10"):
        labels_for_model(model, tmp_path / "few.txt")
    (tmp_path / "map.json").write_text(json.dumps({str(i): f"n{i}" for i in range(10)}))
    assert labels_for_model(model, tmp_path / "map.json")[9] == "n9"
    with pytest.raises(DataError, match="neither a built-in set"):
        load_labels(tmp_path / "missing.txt")
    with pytest.raises(VitkitError, match="top_k"):
        predict([], model, top_k=0)


def test_weights_option_loads_into_a_registry_model(capsys, photo_files, tmp_path):
    model = create_model("vit_digits").eval()
    vitkit.save_pretrained(model, tmp_path / "digits")
    out = _cli_json(capsys, photo_files[0], "--model", "vit_digits", "--weights", str(tmp_path / "digits"))
    expected = predict(photo_files[0], model)[0]
    assert [p["index"] for p in out[0]["predictions"]] == [p.index for p in expected.top_k]
    assert out[0]["predictions"][0]["label"] == expected.top_k[0].label


def test_predict_takes_tensors_float_as_model_input_and_uint8_as_images():
    import numpy as np
    from PIL import Image

    import vitkit
    from vitkit.errors import ImageError
    from vitkit.processor import ImageProcessor

    model = vitkit.create_model("vit_digits").eval()
    rng = np.random.default_rng(0)
    arrays = [rng.integers(0, 256, (40, 30, 3), dtype=np.uint8) for _ in range(2)]
    processor = ImageProcessor.from_model(model)
    x = processor([Image.fromarray(a) for a in arrays])  # (2, C, H, W)
    def scores(results):  # (index, probability) per image and rank; a batch of one may round differently
        return [[(p.index, pytest.approx(p.probability, abs=1e-6)) for p in r.top_k] for r in results]

    want = scores(vitkit.predict([Image.fromarray(a) for a in arrays], model, top_k=3))
    assert scores(vitkit.predict(x, model, top_k=3)) == want
    assert scores(vitkit.predict(x[0], model, top_k=3)) == want[:1]
    u8 = torch.from_numpy(arrays[0]).permute(2, 0, 1)  # (H, W, C) -> (C, H, W)
    assert scores(vitkit.predict([u8], model, top_k=3)) == want[:1]
    assert scores(vitkit.predict(u8, model, top_k=3)) == want[:1]
    assert torch.equal(processor(u8), x[:1])
    with pytest.raises(ImageError, match="C=3"):
        vitkit.predict(torch.zeros(2, 5, 8, 8), model)
