"""Native aspect ratio: images as padded patch sequences through one VisionTransformer.

Against transformers' Siglip2VisionModel (NaFlex) and timm's NaFlexVit on the same random weights (fp32,
1e-5), and against vitkit's own fixed-size path: a patch sequence gives what the image resized to its grid
gives, and padding never changes a result.
"""

from __future__ import annotations

import pytest
import torch

import vitkit
from test_weights_refs import randomize
from vitkit.errors import InputSizeError
from vitkit.patches import PatchProcessor, pad_sequences, to_patches
from vitkit.processor import sample_photos

TOL = dict(atol=1e-5, rtol=1e-5)


def _photos():
    wide, _, tall = sample_photos()  # 427x640 and 80x40
    return [wide, tall, wide.crop((0, 0, 200, 120))]


def _siglip2_pair(transformers, folder, num_patches: int = 64):
    """A random Siglip2VisionModel (every parameter re-drawn) saved with its processor, and vitkit's load of it."""
    from transformers.models.siglip2.image_processing_pil_siglip2 import Siglip2ImageProcessorPil

    cfg = transformers.Siglip2VisionConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                           num_attention_heads=4, num_patches=num_patches, patch_size=8)
    ref = randomize(transformers.Siglip2VisionModel(cfg)).eval()
    ref.save_pretrained(folder)
    Siglip2ImageProcessorPil(patch_size=8, max_num_patches=num_patches).save_pretrained(folder)
    return ref, vitkit.from_pretrained(folder)


def test_siglip2_naflex_pooled_output_equals_transformers_batched_and_one_by_one(transformers, tmp_path):
    from transformers.models.siglip2.image_processing_pil_siglip2 import Siglip2ImageProcessorPil

    ref, ours = _siglip2_pair(transformers, tmp_path)
    assert ours.config.posemb_resample == "siglip2" and ours.pretrained_cfg.max_num_patches == 64
    assert ours.load_report.ok and not ours.load_report.adapted
    images = _photos()
    inputs = Siglip2ImageProcessorPil(patch_size=8, max_num_patches=64)(images, return_tensors="pt")
    batch = PatchProcessor(patch_size=8, max_num_patches=64)(images)
    with torch.no_grad():
        theirs = ref(pixel_values=inputs["pixel_values"], pixel_attention_mask=inputs["pixel_attention_mask"],
                     spatial_shapes=inputs["spatial_shapes"]).pooler_output
        mine = ours.forward_patches(batch.patches, batch.mask, batch.grids)
        assert mine.shape == (3, 64)
        torch.testing.assert_close(mine, theirs, **TOL)
        for i in range(3):
            one = PatchProcessor(patch_size=8, max_num_patches=64, pad_to="longest")(images[i])
            torch.testing.assert_close(ours(one), mine[i:i + 1], **TOL)


@pytest.mark.parametrize("form", ["learned", "rope", "registers"])
def test_a_sequence_gives_what_the_image_resized_to_its_grid_gives(form: str) -> None:
    kw = {"learned": {}, "rope": dict(rope="eva", posemb="none", class_token=True),
          "registers": dict(reg_tokens=2, global_pool="avg", no_embed_class=True)}[form]
    model = randomize(vitkit.VisionTransformer(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2,
                                               num_classes=5, **kw)).eval()
    pixels = [torch.randn(3, 24, 56), torch.randn(3, 48, 16), torch.randn(3, 32, 32)]
    batch = pad_sequences([to_patches(p, 8) for p in pixels], [(p.shape[1] // 8, p.shape[2] // 8) for p in pixels],
                          length=30)
    with torch.no_grad():
        seq = model.forward_patches(batch.patches, batch.mask, batch.grids)
        for i, p in enumerate(pixels):
            torch.testing.assert_close(seq[i], model(p[None])[0], **TOL)
        tokens, full = model.forward_patch_features(batch.patches, batch.mask, batch.grids)
        dense = model.forward_features(pixels[0][None])
        torch.testing.assert_close(tokens[0, full[0]], dense[0], **TOL)


def test_padding_never_changes_a_result() -> None:
    model = randomize(vitkit.VisionTransformer(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2,
                                               num_classes=5, global_pool="map", class_token=False)).eval()
    p = to_patches(torch.randn(3, 24, 40), 8)
    with torch.no_grad():
        outs = []
        for length in (15, 16, 40):
            b = pad_sequences([p], [(3, 5)], length=length)
            b.patches[0, 15:] = torch.randn(length - 15, p.shape[1]) * 100  # junk in the padding
            outs.append(model.forward_patches(b.patches, b.mask, b.grids))
    torch.testing.assert_close(outs[1], outs[0], **TOL)
    torch.testing.assert_close(outs[2], outs[0], **TOL)


def test_attention_on_padding_is_zero_and_bad_sequences_are_refused() -> None:
    model = vitkit.VisionTransformer(img_size=32, patch_size=8, embed_dim=32, depth=1, num_heads=2, num_classes=5)
    b = pad_sequences([to_patches(torch.randn(3, 16, 24), 8)], [(2, 3)], length=9)
    maps = model.forward_patch_attention(b.patches, b.mask, b.grids)
    assert maps[0].shape == (1, 2, 10, 10) and float(maps[0][..., 7:].detach().abs().max()) == 0.0
    with pytest.raises(InputSizeError, match=r"\(B, L, 192\)"):
        model.forward_patches(torch.zeros(1, 9, 100), b.mask, b.grids)
    with pytest.raises(InputSizeError, match="as many patches"):
        model.forward_patches(b.patches, b.mask, torch.tensor([[3, 3]]))


def _coords(grids: torch.Tensor, length: int) -> torch.Tensor:
    """timm's patch_coord (B, L, 2): each real patch's (row, column), zeros where padded."""
    out = torch.zeros(len(grids), length, 2, dtype=torch.long)
    for i, (h, w) in enumerate(grids.tolist()):
        yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
        out[i, : h * w] = torch.stack([yy.flatten(), xx.flatten()], dim=-1)
    return out


@pytest.mark.parametrize("variant", ["naflexvit_base_patch16_gap", "naflexvit_base_patch16_siglip"])
def test_naflexvit_file_equals_timm_on_mixed_aspect_batches(timm, variant: str, tmp_path) -> None:
    from safetensors.torch import save_file

    ref = randomize(timm.create_model(variant, pretrained=False, embed_dim=64, depth=2, num_heads=4,
                                      num_classes=7)).eval()
    path = tmp_path / f"{variant}.safetensors"
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, str(path))  # timm's names: embeds.*
    models = [vitkit.create_model(variant, pretrained=path, embed_dim=64, depth=2, num_heads=4, num_classes=7)]
    if variant.endswith("gap"):  # everything but the head count is in the shapes; siglip's GELU is in the name
        models.append(vitkit.from_pretrained(path, num_heads=4))
    for ours in models:
        batch = PatchProcessor.from_model(ours, max_num_patches=96)(_photos())  # its mean, std and filter
        with torch.no_grad():
            theirs = ref(batch.patches, patch_coord=_coords(batch.grids, 96), patch_valid=batch.mask)
            assert ours.load_report.ok
            assert isinstance(vitkit.patches.processor_for(ours), PatchProcessor)  # native aspect by default
            torch.testing.assert_close(ours(batch), theirs, **TOL)
            got = vitkit.predict(_photos(), ours, max_patches=96, top_k=3)
            for result, probs in zip(got, theirs.softmax(-1)):
                top = probs.sort(descending=True)
                assert [p.index for p in result.top_k] == top.indices[:3].tolist()
                torch.testing.assert_close(torch.tensor([p.probability for p in result.top_k]), top.values[:3], **TOL)


def _digits_model():
    return randomize(vitkit.create_model("vit_digits")).eval()


def test_predict_with_max_patches_equals_the_image_resized_to_its_grid() -> None:
    from vitkit.data.transforms import normalize, to_tensor

    model = _digits_model()
    tall = _photos()[1]  # 80x40
    proc = PatchProcessor.from_model(model, max_num_patches=24)
    h, w = proc.size_for(tall.height, tall.width)
    p = model.config.patch_size[0]
    assert (h // p) * (w // p) <= 24 and h > w
    pixels = normalize(to_tensor(proc.transform_image(tall)), proc.mean, proc.std)  # (3, h, w)
    with torch.no_grad():
        expected = model(pixels[None]).softmax(-1)[0]
    got = vitkit.predict([tall, _photos()[0]], model, max_patches=24, top_k=10)
    assert [p.index for p in got[0].top_k] == expected.argsort(descending=True).tolist()
    torch.testing.assert_close(torch.tensor([p.probability for p in got[0].top_k]),
                               expected.sort(descending=True).values, **TOL)
    fast = vitkit.predict([tall, _photos()[0]], model, max_patches=24, top_k=10, backend="onnxruntime")
    for a, b in zip(fast, got):  # an exported graph of images of any size, run once per grid
        assert [p.index for p in a.top_k] == [p.index for p in b.top_k]
        torch.testing.assert_close(torch.tensor([p.probability for p in a.top_k]),
                                   torch.tensor([p.probability for p in b.top_k]), atol=1e-4, rtol=0)


def test_extract_features_on_three_aspects_in_one_call_equals_transformers(transformers, tmp_path) -> None:
    from transformers.models.siglip2.image_processing_pil_siglip2 import Siglip2ImageProcessorPil

    ref, ours = _siglip2_pair(transformers, tmp_path)
    images = _photos()
    inputs = Siglip2ImageProcessorPil.from_pretrained(tmp_path)(images, return_tensors="pt")
    with torch.no_grad():
        theirs = ref(**inputs).pooler_output
    # native aspect by default: the folder's patch budget, no max_patches needed
    feats = vitkit.extract_features(images, ours, batch_size=2).features
    torch.testing.assert_close(torch.from_numpy(feats), theirs, **TOL)
    for i, image in enumerate(images):  # one by one
        one = vitkit.extract_features([image], ours).features
        torch.testing.assert_close(torch.from_numpy(one), theirs[i:i + 1], **TOL)
    with pytest.raises(vitkit.ConfigError, match="one pooled feature"):
        vitkit.extract_features(images, ours, max_patches=64, pool="none")


def test_attention_map_is_on_the_images_own_grid(tmp_path) -> None:
    from vitkit.attention import attention_map, save_attention_map

    model = _digits_model()
    tall = _photos()[1]  # 80x40: its own grid is taller than wide
    seen, heat = attention_map(tall, model, max_patches=32)
    h, w = PatchProcessor.from_model(model, max_num_patches=32).size_for(80, 40)
    p = model.config.patch_size[0]
    assert seen.size == tall.size and heat.shape == (h // p, w // p) and heat.shape[0] > heat.shape[1]
    assert heat.min() >= 0.0 and heat.max() <= 1.0
    out = save_attention_map(tall, tmp_path / "tall.png", model=model, max_patches=32)
    assert out.stat().st_size > 1000


def test_naflex_registry_entries_match_timm(timm) -> None:
    names = vitkit.list_models("naflexvit_*")
    assert len(names) == 6
    for name in names:
        with torch.device("meta"):
            ref, ours = timm.create_model(name, pretrained=False), vitkit.create_model(name)
        assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in ref.parameters()), name
        assert ours.num_prefix_tokens == ref.num_prefix_tokens and ours.global_pool == ref.global_pool, name
        pcfg, theirs = ours.pretrained_cfg, ref.pretrained_cfg
        assert (pcfg.mean, pcfg.std, pcfg.crop_pct, pcfg.interpolation) == (
            theirs["mean"], theirs["std"], theirs["crop_pct"], theirs["interpolation"]), name
        assert pcfg.max_num_patches in (256, 576)
        assert isinstance(vitkit.patches.processor_for(ours), PatchProcessor)  # native by default
