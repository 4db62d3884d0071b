"""Test-only builders of tiny image-text checkpoints: transformers' SiglipModel and CLIPModel folders with
random weights (every parameter re-drawn, so zero-initialised pieces count) and tokenizers trained here
(a SentencePiece model with sentencepiece's trainer, a byte-level BPE with ``tokenizers``)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from _refs import import_transformers, require

CORPUS = [
    "a photo of a cat", "a photo of a dog", "an origami bird on a table", "the small red car in the street",
    "a bad photo of the big house", "art of the old tree", "a sculpture of a horse", "many birds over the sea",
    "itap of a truck", "a plushie fish", "a tattoo of a flower", "the cartoon robot", "hello world 123",
    "numbers 0 1 2 3 4 5 6 7 8 9", "Café, naïve façade — déjà vu!", "zebra giraffe elephant lion tiger",
]
HOSTILE = [
    "", " ", "   \t\n  ", "a photo of a cat.", "A PHOTO OF A CAT!!!", "dog,cat;bird:fish?", "...???!!!", "--",
    "Café naïve façade déjà-vu", "日本語のテキスト", "emoji 🐱🐶🚗 party 🎉", "tabs\tand\nnewlines\r\nhere",
    "  leading and trailing  ", "it's a dog's life, isn't it?", "x" * 500, " ".join(["word"] * 200),
    "ﬁ ligature and ＦＵＬＬ width", "zero\u200bwidth\u00a0nbsp", "numbers 3.14159 and 1,000,000",
    "<html>&amp; tags</html>", "quotes “curly” ‘single’ «guillemets»",
]
TEXT_CORPUS = CORPUS * 20 + HOSTILE


def redraw(model: torch.nn.Module, seed: int = 0) -> None:
    """Every parameter re-drawn from a normal distribution (LayerNorm weights around 1)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            values = torch.randn(p.shape, generator=g) * 0.2
            p.copy_(values + 1.0 if ("norm" in name and name.endswith("weight")) else values)


def train_sentencepiece(path: Path, vocab_size: int = 120) -> Path:
    import sentencepiece

    buf = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter([t.lower() for t in TEXT_CORPUS if t.strip()]), model_writer=buf,
        vocab_size=vocab_size, character_coverage=1.0, model_type="unigram", hard_vocab_limit=False,
        minloglevel=2)
    path.write_bytes(buf.getvalue())
    return path


def clip_tokenizer(folder: Path, vocab_size: int = 300):
    """transformers' CLIPTokenizer over a BPE trained here with its own pipeline (saved in ``folder``)."""
    transformers = import_transformers()
    from tokenizers import pre_tokenizers, trainers

    base = transformers.CLIPTokenizer()
    backend = base.backend_tokenizer
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|startoftext|>", "<|endoftext|>"],
                                  end_of_word_suffix="</w>", show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    backend.train_from_iterator(TEXT_CORPUS, trainer=trainer)
    model_json = json.loads(backend.to_str())["model"]
    vocab = model_json["vocab"]  # the trained vocabulary, the two special tokens first
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model_json["merges"]]
    tok = transformers.CLIPTokenizer(vocab=vocab, merges=merges)
    tok.save_pretrained(folder)
    return tok


def assert_pipeline_agrees(pipe, images, results, labels, template: str, tol: float) -> None:
    """vitkit.zero_shot's ``results`` equal the ``zero-shot-image-classification`` pipeline's scores per label."""
    for image, result in zip(images, results):
        expected = {d["label"]: d["score"] for d in pipe(image, candidate_labels=labels, hypothesis_template=template)}
        got = {p.label: p.probability for p in result.top_k}
        assert got.keys() == expected.keys()
        for label in labels:
            assert abs(got[label] - expected[label]) < tol, (label, got[label], expected[label])


def sample_image(size: int = 40, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size, size + 8, 3), dtype=np.uint8))


def siglip_folder(folder: Path) -> tuple[object, object]:
    """A tiny SiglipModel folder (64 text positions, as the pipeline pads to 64) with its tokenizer and
    processor; returns (model, processor)."""
    transformers = import_transformers()
    folder.mkdir(parents=True, exist_ok=True)
    train_sentencepiece(folder / "spiece.model")
    tokenizer = transformers.SiglipTokenizer(vocab_file=str(folder / "spiece.model"))
    text = dict(vocab_size=tokenizer.vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                num_attention_heads=4, max_position_embeddings=64, projection_size=32)
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                  image_size=32, patch_size=8)
    config = transformers.SiglipConfig(text_config=text, vision_config=vision)
    model = transformers.SiglipModel(config).eval()
    redraw(model)
    with torch.no_grad():
        model.logit_scale.fill_(2.3)
        model.logit_bias.fill_(-1.5)
    image_processor = transformers.SiglipImageProcessorPil(size={"height": 32, "width": 32})
    processor = transformers.SiglipProcessor(image_processor=image_processor, tokenizer=tokenizer)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return model, processor


def clip_folder(folder: Path) -> tuple[object, object]:
    """A tiny CLIPModel folder with its BPE tokenizer and processor; returns (model, processor)."""
    transformers = import_transformers()
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = clip_tokenizer(folder)
    text = dict(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                num_attention_heads=4, max_position_embeddings=77, eos_token_id=tokenizer.eos_token_id,
                bos_token_id=tokenizer.bos_token_id, pad_token_id=tokenizer.pad_token_id)
    vision = dict(hidden_size=48, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                  image_size=32, patch_size=8)
    config = transformers.CLIPConfig(text_config=text, vision_config=vision, projection_dim=24)
    model = transformers.CLIPModel(config).eval()
    redraw(model, seed=1)
    with torch.no_grad():
        model.logit_scale.fill_(2.0)
    image_processor = transformers.CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32,
                                                                                              "width": 32})
    processor = transformers.CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return model, processor


def open_clip_folder(folder: Path, vocab_size: int) -> object:
    """A tiny open_clip CLIP (created by name from its JSON config) saved as open_clip's hub folders are:
    open_clip_config.json and open_clip_model.safetensors; returns the open_clip model."""
    from safetensors.torch import save_file

    open_clip = require("open_clip")
    cfg = {"embed_dim": 24, "quick_gelu": True,
           "vision_cfg": {"image_size": 32, "layers": 2, "width": 48, "patch_size": 8, "head_width": 12},
           "text_cfg": {"context_length": 77, "vocab_size": vocab_size, "width": 32, "heads": 4, "layers": 2}}
    configs = folder / "configs"
    configs.mkdir(parents=True, exist_ok=True)
    (configs / "vitkit-tiny-clip.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(configs)
    model = open_clip.create_model("vitkit-tiny-clip").eval()
    redraw(model, seed=2)
    with torch.no_grad():
        model.logit_scale.fill_(2.5)
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": cfg, "preprocess_cfg": {}}))
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(folder / "open_clip_model.safetensors"))
    return model


GEMMA_SPECIALS = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>"]


def gemma_tokenizer(folder: Path, vocab_size: int = 420, template: str = "$A <eos>"):
    """transformers' GemmaTokenizer (BPE with byte fallback, spaces as '▁') over a vocabulary trained here: the
    five special tokens, the 256 byte tokens, then the merges of a BPE trained on the lowercased corpus. Its
    tokenizer.json's post-processor adds ``template``'s special tokens (SigLIP 2 was trained with EOS appended;
    transformers takes them from the tokenizer.json, not tokenizer_config.json's add_*_token flags)."""
    transformers = import_transformers()
    from tokenizers import Tokenizer, models, normalizers, trainers

    bpe = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    bpe.normalizer = normalizers.Replace(" ", "▁")
    bpe.train_from_iterator([t.lower() for t in TEXT_CORPUS], trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=GEMMA_SPECIALS, show_progress=False))
    trained = json.loads(bpe.to_str())["model"]
    vocab = {s: i for i, s in enumerate(GEMMA_SPECIALS)}
    vocab.update({f"<0x{b:02X}>": len(GEMMA_SPECIALS) + b for b in range(256)})
    for piece, _ in sorted(trained["vocab"].items(), key=lambda kv: kv[1]):
        vocab.setdefault(piece, len(vocab))
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in trained["merges"]]
    tok = transformers.GemmaTokenizer(vocab=vocab, merges=merges)
    tok.save_pretrained(folder)
    set_template(folder, template)
    return transformers.AutoTokenizer.from_pretrained(folder)


def set_template(folder: Path, template: str) -> None:
    """The tokenizer.json's post-processor: ``template`` (e.g. '$A <eos>' or Gemma's '<bos> $A')."""
    from tokenizers import Tokenizer, processors

    tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
    specials = [(t, tok.token_to_id(t)) for t in template.split() if t != "$A"]
    tok.post_processor = processors.TemplateProcessing(single=template, special_tokens=specials)
    tok.save(str(folder / "tokenizer.json"))


def set_tokenizer_config(folder: Path, **fields) -> None:
    """tokenizer_config.json with ``fields`` set (None removes a key)."""
    path = folder / "tokenizer_config.json"
    config = json.loads(path.read_text())
    config.update(fields)
    path.write_text(json.dumps({k: v for k, v in config.items() if v is not None}, indent=2))


def siglip2_folder(folder: Path) -> tuple[object, object]:
    """A tiny Siglip2Model (NaFlex, 16 patches of 8x8) folder with a Gemma tokenizer (EOS appended, padded on
    the right) and its processor, as transformers saves them; returns (model, processor) loaded back from the
    folder: the tokenizer as AutoTokenizer picks it (Siglip2Tokenizer), the image processor with Pillow
    (Siglip2ImageProcessorPil, which vitkit.patches reproduces; the torchvision backend resizes differently)."""
    transformers = import_transformers()
    from transformers.models.siglip2.image_processing_pil_siglip2 import Siglip2ImageProcessorPil

    folder.mkdir(parents=True, exist_ok=True)
    gemma = gemma_tokenizer(folder)  # saved with the folder's Siglip2 config below, Auto* picks Siglip2Tokenizer
    text = dict(vocab_size=len(gemma), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                num_attention_heads=4, max_position_embeddings=64, projection_size=32, bos_token_id=2,
                eos_token_id=1, pad_token_id=0)
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                  num_patches=16, patch_size=8)
    model = transformers.Siglip2Model(transformers.Siglip2Config(text_config=text, vision_config=vision)).eval()
    redraw(model, seed=3)
    with torch.no_grad():
        model.logit_scale.fill_(2.1)
        model.logit_bias.fill_(-1.2)
    model.save_pretrained(folder)
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    image_processor = Siglip2ImageProcessorPil(patch_size=8, max_num_patches=16)
    transformers.Siglip2Processor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(folder)
    set_tokenizer_config(folder, padding_side="right")
    return model, transformers.Siglip2Processor(image_processor=Siglip2ImageProcessorPil.from_pretrained(folder),
                                                tokenizer=transformers.AutoTokenizer.from_pretrained(folder))
