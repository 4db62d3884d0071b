"""SigLIP 2 NaFlex image-text folders (transformers' Siglip2Model with a Gemma tokenizer) against transformers on
random weights: embeddings, logits and zero-shot probabilities (fp32, 1e-5; also through the zero-shot pipeline),
token ids over hostile texts as Siglip2Processor makes them, images at their own aspect ratio, the folded
classifier, the CLI, bad tokenizer files."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
import torch.nn.functional as F

import vitkit
from _cli import run_cli
from _refs import import_transformers
from _text_refs import HOSTILE, assert_pipeline_agrees, set_template, set_tokenizer_config, siglip2_folder
from vitkit.errors import CheckpointError
from vitkit.patches import PatchProcessor
from vitkit.processor import sample_photos

LABELS = ["cat", "dog", "bird", "red car", "Café crème"]
TEMPLATE = "a photo of a {}."
TOL = 1e-5


@pytest.fixture(scope="module")
def transformers():
    return import_transformers()


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """(folder, transformers model, transformers processor, vitkit model)."""
    folder = tmp_path_factory.mktemp("siglip2")
    ref, processor = siglip2_folder(folder)
    return folder, ref, processor, vitkit.load_image_text(folder)


def _photos():
    wide, _, tall = sample_photos()  # 427x640 and 80x40, and a 200x120 crop: three aspect ratios
    return [wide, tall, wide.crop((0, 0, 200, 120))]


def _image_inputs(processor, images):
    inputs = processor.image_processor(images, return_tensors="pt")
    return {k: inputs[k] for k in ("pixel_values", "pixel_attention_mask", "spatial_shapes")}


def _ids(processor, texts):
    # Siglip2Processor's text defaults (padding to 64, truncation); the attention mask it also returns is left
    # out: it masks the padding SigLIP 2 was trained to attend to
    return processor(text=texts, return_tensors="pt")["input_ids"]


def test_embeddings_and_logits_match_transformers_at_native_aspect(pair):
    folder, ref, processor, model = pair
    texts = [TEMPLATE.format(x) for x in LABELS] + HOSTILE[:8]
    images = _photos()
    ids, inputs = _ids(processor, texts), _image_inputs(processor, images)
    assert isinstance(model.image_processor, PatchProcessor) and model.image_processor.max_num_patches == 16
    with torch.no_grad():
        text_ref = F.normalize(ref.get_text_features(input_ids=ids).pooler_output, dim=-1)
        image_ref = F.normalize(ref.get_image_features(**inputs).pooler_output, dim=-1)
        logits_ref = ref(input_ids=ids, **inputs).logits_per_image
        assert torch.equal(model.tokenize(texts), ids)
        torch.testing.assert_close(model.encode_text(texts), text_ref, atol=TOL, rtol=0)
        torch.testing.assert_close(model.encode_image(images), image_ref, atol=TOL, rtol=0)
        for i, image in enumerate(images):  # one by one
            torch.testing.assert_close(model.encode_image([image]), image_ref[i:i + 1], atol=TOL, rtol=0)
        torch.testing.assert_close(model.logits(images, texts), logits_ref, atol=TOL, rtol=0)
    assert torch.isfinite(logits_ref).all() and float(logits_ref.std()) > 1e-3  # not a degenerate reference


@pytest.mark.parametrize("variant", ["as saved", "left padding", "gemma template"])
def test_token_ids_match_siglip2_processor_over_hostile_texts(pair, transformers, tmp_path, variant):
    folder, ref, processor, model = pair
    if variant != "as saved":
        shutil.copytree(folder, tmp_path / "v", dirs_exist_ok=True)
        folder = tmp_path / "v"
        if variant == "left padding":  # no side stated: Siglip2Tokenizer's own default
            set_tokenizer_config(folder, padding_side=None)
        else:  # Gemma's "<bos> $A": transformers follows the tokenizer.json, so vitkit does
            set_template(folder, "<bos> $A")
        processor, model = transformers.AutoProcessor.from_pretrained(folder), vitkit.load_image_text(folder)
    texts = [*HOSTILE, *(TEMPLATE.format(x) for x in LABELS), "x" * 70, "word " * 63]
    ids = model.tokenize(texts)
    assert ids.shape == (len(texts), 64) and torch.equal(ids, _ids(processor, texts))
    pad = int(ids[0, 0] if variant == "left padding" else ids[0, -1])
    assert pad == processor.tokenizer.pad_token_id


def test_zero_shot_probabilities_match_the_pipeline(pair, transformers):
    folder, ref, processor, model = pair
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder, model_input_names=["input_ids"])
    pipe = transformers.pipeline("zero-shot-image-classification", model=ref, tokenizer=tokenizer,
                                 image_processor=processor.image_processor)
    images = _photos()
    results = vitkit.zero_shot(images, LABELS, model=str(folder), templates=[TEMPLATE], top_k=len(LABELS))
    assert_pipeline_agrees(pipe, images, results, LABELS, TEMPLATE, TOL)


def test_folded_classifier_runs_natively_and_predicts_zero_shot_probabilities(pair):
    folder, ref, processor, model = pair
    images = _photos()
    expected = vitkit.zero_shot(images, LABELS, model=model, top_k=3)
    net = vitkit.zero_shot_classifier(model, LABELS)
    assert isinstance(vitkit.patches.processor_for(net), PatchProcessor)  # native aspect, the folder's budget
    with torch.no_grad():
        torch.testing.assert_close(net(model.image_processor(images)),
                                   model.logits(images, [TEMPLATE.format(x) for x in LABELS]), atol=TOL, rtol=0)
    for a, b in zip(vitkit.predict(images, net, top_k=3), expected):
        assert [p.label for p in a.top_k] == [p.label for p in b.top_k]
        assert max(abs(p.probability - q.probability) for p, q in zip(a.top_k, b.top_k)) < TOL


def test_cli_zero_shot_on_a_siglip2_folder(pair, tmp_path):
    folder, ref, processor, model = pair
    image = tmp_path / "tall.png"
    _photos()[1].save(image)
    res = run_cli("zero-shot", str(image), "--model", str(folder), "--labels", "cat,dog,bird", "--top-k", "2")
    assert res.returncode == 0, res.stderr
    expected = vitkit.zero_shot([str(image)], ["cat", "dog", "bird"], model=model, top_k=2)
    assert str(image) in res.stdout and f"{expected[0].top_k[0].label} (" in res.stdout


def test_bad_gemma_tokenizer_files_are_one_clear_error(pair, tmp_path):
    folder, ref, processor, model = pair
    broken = tmp_path / "broken"
    shutil.copytree(folder, broken)
    (broken / "tokenizer.json").unlink()
    with pytest.raises(CheckpointError, match=r"tokenizer\.json.*missing"):
        vitkit.load_image_text(broken)
    shutil.copy(folder / "tokenizer.json", broken / "tokenizer.json")
    config = json.loads((folder / "config.json").read_text())
    config["text_config"]["vocab_size"] = model.tokenizer.vocab_size - 10
    (broken / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="tokens but the text tower embeds"):
        vitkit.load_image_text(broken)
    set_tokenizer_config(broken, padding_side="middle")
    with pytest.raises(CheckpointError, match="padding_side='middle'"):
        vitkit.load_image_text(broken)


def test_the_vision_half_loads_as_a_native_image_model(pair):
    folder, ref, processor, model = pair
    tower = vitkit.from_pretrained(folder)  # the text tower and logit scale and bias dropped, named in the report
    assert tower.pretrained_cfg.max_num_patches == 16 and "logit_scale" in tower.load_report.dropped
    images = _photos()
    with torch.no_grad():
        expected = ref.get_image_features(**_image_inputs(processor, images)).pooler_output
    got = vitkit.extract_features(images, tower).features  # native aspect by default
    torch.testing.assert_close(torch.from_numpy(got), expected, atol=TOL, rtol=0)


def test_fixed_resolution_siglip2_a_siglip_model_with_a_gemma_tokenizer(tmp_path, transformers):
    """SigLIP 2 at a fixed resolution ships as a SiglipModel folder with a Gemma tokenizer: its texts get SigLIP 2's
    rules (lowercased, the tokenizer.json's end token, padded to 64), not SigLIP's SentencePiece canonicalisation,
    and the embeddings equal transformers' on the ids its tokenizer gives the lowercased texts padded to 64."""
    from _text_refs import gemma_tokenizer, redraw

    gemma = gemma_tokenizer(tmp_path)
    text = dict(vocab_size=len(gemma), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                num_attention_heads=4, max_position_embeddings=64, projection_size=32, pad_token_id=0,
                eos_token_id=1, bos_token_id=2)
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, image_size=32,
                  patch_size=8)
    ref = transformers.SiglipModel(transformers.SiglipConfig(text_config=text, vision_config=vision)).eval()
    redraw(ref, seed=5)
    ref.save_pretrained(tmp_path)
    set_tokenizer_config(tmp_path, padding_side="right")
    model = vitkit.load_image_text(tmp_path)
    texts = ["A photo of a CAT.", "Café crème!", ""]
    tok = transformers.AutoTokenizer.from_pretrained(tmp_path)
    ids = tok([t.lower() for t in texts], padding="max_length", max_length=64, truncation=True,
              return_tensors="pt")["input_ids"]
    assert torch.equal(model.tokenize(texts), ids)
    with torch.no_grad():
        want = F.normalize(ref.get_text_features(input_ids=ids).pooler_output, dim=-1)
        got = model.encode_text(texts)
    assert (got - want).abs().max() < TOL
