"""open_clip's CLIP against vitkit on random weights: embeddings, logits and the zero-shot classifier
(open_clip's build_zero_shot_classifier, several templates averaged per class)."""

from __future__ import annotations

import shutil

import pytest
import torch

import vitkit
from _text_refs import clip_tokenizer, open_clip_folder
from vitkit.zeroshot import class_embeddings

TOL = 1e-5
LABELS = ["cat", "dog", "red car"]
TEMPLATES = ["a photo of a {}.", "art of the {}.", "itap of a {}."]


def test_open_clip_clip_matches(tmp_path):
    tokenizer = clip_tokenizer(tmp_path / "tok")
    ref = open_clip_folder(tmp_path / "oc", vocab_size=len(tokenizer))
    shutil.copy(tmp_path / "tok" / "tokenizer.json", tmp_path / "oc" / "tokenizer.json")
    model = vitkit.load_image_text(tmp_path / "oc")
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, len(tokenizer), (4, 77), generator=g)
    pixels = torch.randn(3, 3, 32, 32, generator=g)
    from open_clip.zero_shot_classifier import build_zero_shot_classifier
    with torch.no_grad():
        torch.testing.assert_close(model.encode_text(ids), ref.encode_text(ids, normalize=True), atol=TOL, rtol=0)
        torch.testing.assert_close(model.encode_image(pixels), ref.encode_image(pixels, normalize=True),
                                   atol=TOL, rtol=0)
        image, text, scale = ref(pixels, ids)
        torch.testing.assert_close(model(pixels, ids), scale * image @ text.T, atol=TOL, rtol=0)
        weights = build_zero_shot_classifier(ref, tokenizer=model.tokenize, classnames=LABELS, templates=TEMPLATES,
                                             device="cpu")  # (D, classes)
        torch.testing.assert_close(class_embeddings(model, LABELS, TEMPLATES), weights.T, atol=TOL, rtol=0)
        probs = (scale * ref.encode_image(pixels, normalize=True) @ weights).softmax(dim=-1)
    net = vitkit.zero_shot_classifier(model, LABELS, TEMPLATES)
    with torch.no_grad():
        torch.testing.assert_close(net(pixels).softmax(dim=-1), probs, atol=TOL, rtol=0)


def test_a_published_name_comes_through_the_hub_cache_or_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(vitkit.CheckpointError, match="hf download google/siglip-base-patch16-224"):
        vitkit.load_image_text("siglip_base_patch16_224")


@pytest.mark.parametrize("weights_file", ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"])
def test_the_image_tower_of_an_open_clip_folder_loads_as_an_image_model(tmp_path, weights_file):
    """vitkit.from_pretrained(open_clip folder): the image tower as a VisionTransformer equal to open_clip's
    encode_image, the text tower dropped (and reported), the preprocessing open_clip's own eval transform."""
    from open_clip.transform import image_transform
    from safetensors.torch import load_file

    from vitkit.processor import sample_photos

    ref = open_clip_folder(tmp_path, vocab_size=300)
    if weights_file.endswith(".bin"):
        torch.save(load_file(tmp_path / "open_clip_model.safetensors"), tmp_path / weights_file)
        (tmp_path / "open_clip_model.safetensors").unlink()
    model = vitkit.from_pretrained(tmp_path)
    report = model.load_report
    assert report.format == "open_clip" and report.ok and "text_projection" in report.dropped
    pixels = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(model(pixels), ref.encode_image(pixels), atol=TOL, rtol=0)
    photos = sample_photos()
    transform = image_transform(32, is_train=False)  # open_clip's eval preprocessing (torchvision)
    ours = vitkit.ImageProcessor.from_model(model)
    for photo in photos:
        torch.testing.assert_close(ours.preprocess_one(photo), transform(photo), atol=1e-6, rtol=0)
    feats = torch.as_tensor(vitkit.extract_features(photos, model).features)
    with torch.no_grad():
        want = ref.encode_image(torch.stack([transform(p) for p in photos]))
    assert feats.shape == want.shape and float((feats - want).abs().max()) < TOL


def test_open_clip_is_read_not_written(tmp_path, capsys):
    from vitkit.cli import main
    from vitkit.errors import ConfigError

    model = vitkit.create_model("vit_digits")
    with pytest.raises(ConfigError, match="'open_clip' format \\(vitkit reads it\\): use one of vitkit, timm, hf, npz"):
        vitkit.save_pretrained(model, tmp_path / "x", format="open_clip")
    folder = vitkit.save_pretrained(model, tmp_path / "m")
    with pytest.raises(SystemExit):
        main(["convert", str(folder), str(tmp_path / "y"), "--to", "open_clip"])
    assert "invalid choice: 'open_clip'" in capsys.readouterr().err
