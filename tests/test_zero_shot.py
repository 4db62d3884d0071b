"""Image-text models against transformers on random weights: embeddings, logits, zero-shot probabilities
(also through the zero-shot pipeline), token ids over hostile texts, the folded classifier, bad input."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
import torch.nn.functional as F

import vitkit
from _cli import run_cli
from _refs import import_transformers
from _text_refs import HOSTILE, assert_pipeline_agrees, clip_folder, sample_image, siglip_folder
from vitkit.errors import CheckpointError, ConfigError

LABELS = ["cat", "dog", "bird", "red car", "Café crème"]
TOL = 1e-5


@pytest.fixture(scope="module")
def transformers():
    return import_transformers()


@pytest.fixture(scope="module", params=["siglip", "clip"])
def pair(request, tmp_path_factory):
    """(folder, transformers model, transformers processor, vitkit model) of one tiny image-text checkpoint."""
    folder = tmp_path_factory.mktemp(request.param)
    ref, processor = (siglip_folder if request.param == "siglip" else clip_folder)(folder)
    return folder, ref, processor, vitkit.load_image_text(folder)


def _context(ref) -> int:
    return ref.config.text_config.max_position_embeddings


def _ref_ids(processor, ref, texts):
    # the tokenizer's defaults plus the padding each model was trained with (SigLIP: to 64, no mask)
    return processor.tokenizer(texts, padding="max_length", max_length=_context(ref), truncation=True,
                               return_tensors="pt")["input_ids"]


def _pooled(out):
    return getattr(out, "pooler_output", out)  # transformers 5 returns an output object


def test_embeddings_and_logits_match_transformers(pair):
    folder, ref, processor, model = pair
    texts = [f"a photo of a {x}." for x in LABELS] + HOSTILE[:6]
    ids = _ref_ids(processor, ref, texts)
    images = [sample_image(seed=i) for i in range(3)]
    pixels = processor.image_processor(images, return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        text_ref = F.normalize(_pooled(ref.get_text_features(input_ids=ids)), dim=-1)
        image_ref = F.normalize(_pooled(ref.get_image_features(pixel_values=pixels)), dim=-1)
        logits_ref = ref(input_ids=ids, pixel_values=pixels).logits_per_image
        assert torch.equal(model.tokenize(texts), ids)
        torch.testing.assert_close(model.encode_text(texts), text_ref, atol=TOL, rtol=0)
        torch.testing.assert_close(model.encode_image(images), image_ref, atol=TOL, rtol=0)
        torch.testing.assert_close(model.encode_image(pixels), image_ref, atol=TOL, rtol=0)
        torch.testing.assert_close(model.logits(pixels, texts), logits_ref, atol=TOL, rtol=0)


def test_token_ids_match_the_reference_tokenizer_over_hostile_texts(pair):
    folder, ref, processor, model = pair
    texts = [*HOSTILE, *(f"a photo of a {x}." for x in LABELS)]
    assert torch.equal(model.tokenize(texts), _ref_ids(processor, ref, texts))
    assert model.tokenize([""]).shape == (1, _context(ref))


def test_zero_shot_probabilities_match_the_pipeline(pair, transformers):
    folder, ref, processor, model = pair
    tokenizer = processor.tokenizer
    if ref.config.model_type == "siglip":
        # transformers 5's SiglipTokenizer also returns an attention mask, which the pipeline passes on and
        # which masks the padding SigLIP was trained to attend to; without it the pipeline runs the model as
        # trained (no mask, padded to 64)
        tokenizer = transformers.SiglipTokenizer(vocab_file=str(folder / "spiece.model"),
                                                 model_input_names=["input_ids"])
    pipe = transformers.pipeline("zero-shot-image-classification", model=ref, tokenizer=tokenizer,
                                 image_processor=processor.image_processor)
    images = [sample_image(seed=i) for i in range(2)]
    results = vitkit.zero_shot(images, LABELS, model=model, templates=["a photo of a {}."], top_k=len(LABELS))
    assert_pipeline_agrees(pipe, images, results, LABELS, "a photo of a {}.", TOL)


def test_templates_are_averaged_per_class_as_open_clip_does(pair):
    folder, ref, processor, model = pair
    templates = ["a photo of a {}.", "art of the {}.", "itap of a {}."]
    with torch.no_grad():
        texts = [t.format(x) for x in LABELS for t in templates]
        embeds = F.normalize(_pooled(ref.get_text_features(input_ids=_ref_ids(processor, ref, texts))), dim=-1)
        expected = F.normalize(embeds.reshape(len(LABELS), len(templates), -1).mean(dim=1), dim=-1)
    from vitkit.zeroshot import class_embeddings
    torch.testing.assert_close(class_embeddings(model, LABELS, templates), expected, atol=TOL, rtol=0)
    assert len(vitkit.zeroshot.resolve_templates("imagenet")) == 80
    assert vitkit.zeroshot.resolve_templates(["art of the {}.", "imagenet"])[1:] == vitkit.zeroshot.resolve_templates(
        "imagenet")  # set names inside a list are expanded too


def test_folded_classifier_predicts_zero_shot_probabilities_also_after_reload(pair, tmp_path):
    folder, ref, processor, model = pair
    images = [sample_image(seed=i) for i in range(2)]
    expected = vitkit.zero_shot(images, LABELS, model=model, top_k=3)
    net = vitkit.zero_shot_classifier(model, LABELS)
    assert isinstance(net, vitkit.VisionTransformer) and net.pretrained_cfg.label_names == tuple(LABELS)
    with torch.no_grad():  # the head is the two-tower model's logits
        pixels = processor.image_processor(images, return_tensors="pt")["pixel_values"]
        torch.testing.assert_close(net(pixels), model.logits(pixels, [f"a photo of a {x}." for x in LABELS]),
                                   atol=TOL, rtol=0)
    vitkit.save_pretrained(net, tmp_path / "folded")
    for candidate in (net, vitkit.load_model(tmp_path / "folded")):
        got = vitkit.predict(images, candidate, top_k=3)
        for a, b in zip(got, expected):
            assert [p.label for p in a.top_k] == [p.label for p in b.top_k]
            assert max(abs(p.probability - q.probability) for p, q in zip(a.top_k, b.top_k)) < TOL


def test_folded_classifier_exports_to_onnx(pair, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    folder, ref, processor, model = pair
    net = vitkit.zero_shot_classifier(model, LABELS[:3])
    path = vitkit.export_onnx(net, tmp_path / "folded.onnx").path
    pixels = processor.image_processor([sample_image()], return_tensors="pt")["pixel_values"]
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {session.get_inputs()[0].name: pixels.numpy()})
    with torch.no_grad():
        torch.testing.assert_close(torch.from_numpy(out), net(pixels), atol=1e-4, rtol=0)


@pytest.mark.parametrize("labels", [[], None, ["cat", ""], ["cat", "?!."], ["cat", "dog", "Cat"], "cat,dog"])
def test_bad_labels_are_one_clear_error(pair, labels):
    folder, ref, processor, model = pair
    with pytest.raises(ConfigError, match="abel"):
        vitkit.zero_shot([sample_image()], labels, model=model)


def test_bad_tokenizer_files_are_one_clear_error(pair, tmp_path):
    folder, ref, processor, model = pair
    name = model.text_config.rules.file
    broken = tmp_path / "broken"
    shutil.copytree(folder, broken)
    (broken / name).unlink()
    with pytest.raises(CheckpointError, match=f"{name}.*missing"):
        vitkit.load_image_text(broken)
    (broken / name).write_bytes(b"\x00garbage, not a tokenizer" * 10)
    with pytest.raises(CheckpointError, match=f"{name}.*(could not be read|as JSON|not valid JSON)"):
        vitkit.load_image_text(broken)
    config = json.loads((folder / "config.json").read_text())
    config["text_config"]["vocab_size"] = model.tokenizer.vocab_size - 10
    shutil.copy(folder / name, broken / name)
    (broken / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="tokens but the text tower embeds"):
        vitkit.load_image_text(broken)


def test_cli_zero_shot_prints_like_predict(pair, tmp_path):
    folder, ref, processor, model = pair
    image = tmp_path / "img.png"
    sample_image().save(image)
    res = run_cli("zero-shot", str(image), "--model", str(folder), "--labels", "cat,dog,bird", "--top-k", "2",
                  "--output", str(tmp_path / "preds.csv"))
    assert res.returncode == 0, res.stderr
    expected = vitkit.zero_shot([str(image)], ["cat", "dog", "bird"], model=model, top_k=2)
    assert str(image) in res.stdout and f"{expected[0].top_k[0].label} (" in res.stdout
    assert (tmp_path / "preds.csv").read_text().count("\n") == 3
    res = run_cli("zero-shot", str(image), "--model", str(folder))
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1 and "--labels" in res.stderr
