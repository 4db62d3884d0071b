"""Google .npz files against Google's own Flax code (vendored under tests/reference/google, test-only).

Each test builds a tiny model with google-research/vision_transformer's ``models_vit`` or big_vision's
``models/vit.py``, re-draws every parameter at random (norm scales and biases too, so a wrong mapping cannot
pass), writes them as an .npz the way those repositories name them, loads the file with vitkit's defaults and
compares outputs in fp32. Tolerance: 1e-4 across frameworks (measured rounding is ~1e-6); exact-erf GELU (timm's
numbers) lands far outside that on the same files, which each test also checks, so the comparison discriminates.

jax and flax come with the ``test`` extra. Where jax cannot be imported the module is skipped with the reason
printed; where it can, nothing here is skipped.
"""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import vitkit
from vitkit.errors import CheckpointError

jax = pytest.importorskip("jax", reason="jax is not installed: Google-parity tests need the test extra (jax, flax)")
pytest.importorskip("flax", reason="flax is not installed: Google-parity tests need the test extra (jax, flax)")
jax.config.update("jax_default_matmul_precision", "highest")  # fp32 matmuls on every backend

sys.path.insert(0, str(Path(__file__).parent / "reference" / "google"))
from big_vision.models import vit as bv_vit  # noqa: E402
from vit_jax import checkpoint as vit_checkpoint  # noqa: E402
from vit_jax import models_vit  # noqa: E402

TOL = 1e-4  # fp32 across frameworks
POSEMB_TOL = 1e-5  # resized position embeddings: scipy interpolates in float64, torch in float32 (~1e-6 measured)
WIDTH, DEPTH, HEADS, MLP, PATCH, CLASSES = 64, 2, 4, 128, 8, 5
TIMM = dict(act_layer="gelu", posemb_resample="timm")


def flatten(tree: dict, prefix: str = "") -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}/"))
        else:
            out[prefix + key] = np.asarray(value)
    return out


def unflatten(flat: dict[str, np.ndarray]) -> dict:
    tree: dict = {}
    for key, value in flat.items():
        *path, leaf = key.split("/")
        node = tree
        for part in path:
            node = node.setdefault(part, {})
        node[leaf] = value
    return tree


def redraw(flat: dict[str, np.ndarray], seed: int = 0, std: float = 0.25) -> dict[str, np.ndarray]:
    """Every parameter at random: LayerNorm scales around 1, everything else around 0."""
    rng = np.random.default_rng(seed)
    return {k: (rng.normal(size=v.shape) * std + (1.0 if k.endswith("/scale") else 0.0)).astype(np.float32)
            for k, v in flat.items()}


def images(size: int = 32, n: int = 2, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def run_flax(module, params: dict[str, np.ndarray], x: torch.Tensor, **kwargs) -> torch.Tensor:
    """Google's forward pass on NHWC images; big_vision returns (logits, extras)."""
    out = module.apply({"params": unflatten(params)}, np.asarray(x.permute(0, 2, 3, 1)), **kwargs)
    return torch.from_numpy(np.array(out[0] if isinstance(out, tuple) else out))  # a writable copy


def diff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return float((a.detach().float() - b.detach().float()).abs().max())


def init_params(module, size: int = 32, seed: int = 0, **kwargs) -> dict[str, np.ndarray]:
    """The module's parameter tree, re-drawn (shapes only are traced: nothing is computed or compiled)."""
    variables = jax.eval_shape(lambda: module.init(jax.random.PRNGKey(0), np.zeros((1, size, size, 3), np.float32),
                                                   **kwargs))
    return redraw(flatten(jax.tree_util.tree_map(lambda s: np.zeros(s.shape, s.dtype), variables["params"])), seed)


def vit_jax_model(classifier: str = "token", representation_size: int | None = None):
    """The original ViT of google-research/vision_transformer (models_vit.VisionTransformer)."""
    return models_vit.VisionTransformer(
        num_classes=CLASSES, patches=SimpleNamespace(size=(PATCH, PATCH)), hidden_size=WIDTH,
        transformer=dict(num_layers=DEPTH, mlp_dim=MLP, num_heads=HEADS, dropout_rate=0.0,
                         attention_dropout_rate=0.0),
        classifier=classifier, representation_size=representation_size)


def big_vision_model(**kwargs):
    return bv_vit.Model(num_classes=kwargs.pop("num_classes", CLASSES), width=WIDTH, depth=DEPTH, mlp_dim=MLP,
                        num_heads=HEADS, patch_size=(PATCH, PATCH), **kwargs)


def check(path: Path, want: torch.Tensor, x: torch.Tensor, **load) -> tuple[float, float]:
    """Max |diff| of vitkit's default load (must be within TOL) and of timm's numerics on the same file."""
    model = vitkit.from_pretrained(path, **load)
    assert model.load_report.ok, model.load_report.summary()
    with torch.no_grad():
        ours = diff(model(x), want)
        timm_numbers = diff(vitkit.from_pretrained(path, **{**load, **TIMM})(x), want)
    assert ours <= TOL, f"vitkit vs Google's Flax code: {ours:.3g} > {TOL}"
    # the comparison can tell the numerics apart: exact GELU (timm's numbers) lands far outside what ours does
    assert timm_numbers > 5 * ours, f"exact GELU {timm_numbers:.3g} vs tanh GELU {ours:.3g}: test cannot tell"
    return ours, timm_numbers


# ---------------------------------------------------------------------- layouts
@pytest.mark.parametrize("classifier, rep", [("token", None), ("token", 48), ("gap", None)],
                         ids=["token", "token-pre_logits", "gap"])
def test_original_vit_layout(tmp_path, classifier, rep):
    module = vit_jax_model(classifier, rep)
    params = init_params(module, train=False)
    np.savez(tmp_path / "vit.npz", **params)
    x = images()
    ours, timm_numbers = check(tmp_path / "vit.npz", run_flax(module, params, x, train=False), x)
    print(f"original ViT ({classifier}, pre_logits={rep}): max diff {ours:.2e} (timm numerics {timm_numbers:.2e})")


@pytest.mark.parametrize("kwargs", [dict(pool_type="gap"), dict(pool_type="map"), dict(pool_type="tok"),
                                    dict(pool_type="gap", scan=True), dict(pool_type="map", scan=True)],
                         ids=["gap", "map", "tok", "gap-scan", "map-scan"])
def test_big_vision_layouts(tmp_path, kwargs):
    module = big_vision_model(**kwargs)
    params = init_params(module)
    if kwargs.get("scan"):
        assert any(k.startswith("Transformer/encoderblock/") for k in params)  # stacked blocks
    np.savez(tmp_path / "bv.npz", **{f"params/{k}": v for k, v in params.items()})
    x = images()
    ours, timm_numbers = check(tmp_path / "bv.npz", run_flax(module, params, x), x)
    print(f"big_vision {kwargs}: max diff {ours:.2e} (timm numerics {timm_numbers:.2e})")


def test_siglip_image_tower(tmp_path):
    """A SigLIP two-tower file: the image tower (MAP head, projection head) under params/img/, text dropped."""
    module = big_vision_model(pool_type="map", num_classes=32)
    params = init_params(module)
    arrays = {f"params/img/{k}": v for k, v in params.items()}
    arrays.update({"params/txt/Encoder_0/encoder_norm/scale": np.ones(16, np.float32),
                   "params/txt/Embed_0/embedding": np.zeros((10, 16), np.float32),
                   "params/t": np.ones(1, np.float32), "params/b": np.zeros(1, np.float32)})
    np.savez(tmp_path / "siglip.npz", **arrays)
    x = images()
    ours, timm_numbers = check(tmp_path / "siglip.npz", run_flax(module, params, x), x)
    model = vitkit.from_pretrained(tmp_path / "siglip.npz")
    assert "t" in model.load_report.dropped and model.config.global_pool == "map"
    print(f"SigLIP image tower: max diff {ours:.2e} (timm numerics {timm_numbers:.2e})")


# ---------------------------------------------------------------------- resize, sincos2d, bf16
def test_384_to_224_resize_matches_interpolate_posembed(tmp_path):
    """A 24x24 grid (384 px at patch 16) loaded at 14x14 (224 px), as Google's interpolate_posembed resizes it."""
    patch = 4
    module = models_vit.VisionTransformer(
        num_classes=CLASSES, patches=SimpleNamespace(size=(patch, patch)), hidden_size=32,
        transformer=dict(num_layers=1, mlp_dim=64, num_heads=2, dropout_rate=0.0, attention_dropout_rate=0.0),
        classifier="token")
    params = init_params(module, size=24 * patch, train=False)
    np.savez(tmp_path / "vit384.npz", **params)
    key = "Transformer/posembed_input/pos_embedding"
    assert params[key].shape == (1, 24 * 24 + 1, 32)
    resized = dict(params)
    resized[key] = np.asarray(vit_checkpoint.interpolate_posembed(params[key], 14 * 14 + 1, has_class_token=True))
    x = images(size=14 * patch)
    want = run_flax(module, resized, x, train=False)

    model = vitkit.from_pretrained(tmp_path / "vit384.npz", img_size=14 * patch)
    assert "bilinear, corners aligned" in " ".join(model.load_report.adapted)
    assert "posemb_resample='google'" in model.load_report.numerics
    assert diff(model.pos_embed, torch.tensor(resized[key])) <= POSEMB_TOL
    ours = diff(model(x), want)
    timm_resize = diff(vitkit.from_pretrained(tmp_path / "vit384.npz", img_size=14 * patch,
                                              posemb_resample="timm")(x), want)
    print(f"24x24 -> 14x14 resize: max diff {ours:.2e} (timm's npz resize: {timm_resize:.2e})")
    assert ours <= TOL
    assert timm_resize > TOL  # timm's resize (corners not aligned) is not Google's


def test_big_vision_resample_posemb_matches(tmp_path):
    """big_vision's own resample_posemb (scipy zoom, patches only) equals the loader's resize."""
    module = big_vision_model(pool_type="gap")
    params = init_params(module, size=48)  # 6x6 grid
    np.savez(tmp_path / "bv48.npz", **params)
    model = vitkit.from_pretrained(tmp_path / "bv48.npz", img_size=32)  # 4x4 grid
    new = np.zeros((1, 16, WIDTH), np.float32)
    want = np.asarray(bv_vit.resample_posemb(params["pos_embedding"], new))
    assert diff(model.pos_embed, torch.tensor(want)) <= POSEMB_TOL


def test_sincos2d_posemb(tmp_path):
    """big_vision's posemb='sincos2d' (its i1k S/16 recipes): no position tensor in the file."""
    module = big_vision_model(pool_type="gap", posemb="sincos2d")
    params = init_params(module)
    assert not any("pos_embedding" in k for k in params)
    np.savez(tmp_path / "sincos.npz", **params)
    with pytest.raises(CheckpointError, match="posemb='sincos2d'"):
        vitkit.from_pretrained(tmp_path / "sincos.npz")
    x = images()
    ours, _ = check(tmp_path / "sincos.npz", run_flax(module, params, x), x, posemb="sincos2d", img_size=32)
    # the embedding itself, on a non-square grid (computed for each input's grid, as big_vision does)
    got = vitkit.posemb.posemb_sincos_2d((3, 5), WIDTH)
    assert diff(got, torch.tensor(np.asarray(bv_vit.posemb_sincos_2d(3, 5, WIDTH)))) <= 1e-6
    print(f"big_vision sincos2d: max diff {ours:.2e}")


def test_bf16_arrays(tmp_path):
    """big_vision keeps bf16 arrays as they are; np.savez writes them as raw 2-byte records (|V2)."""
    module = big_vision_model(pool_type="map")
    params = init_params(module)
    bf16 = {k: np.asarray(jax.numpy.asarray(v, dtype=jax.numpy.bfloat16)) for k, v in params.items()}
    np.savez(tmp_path / "bf16.npz", **bf16)
    rounded = {k: np.asarray(v, dtype=np.float32) for k, v in bf16.items()}  # the values the file holds
    x = images()
    want = run_flax(module, rounded, x)
    model = vitkit.from_pretrained(tmp_path / "bf16.npz")
    assert model.pos_embed.dtype == torch.float32  # upcast by default
    assert diff(model(x), want) <= TOL
    kept = vitkit.from_pretrained(tmp_path / "bf16.npz", dtype=torch.bfloat16)
    assert kept.pos_embed.dtype == torch.bfloat16
    assert diff(kept.pos_embed, torch.tensor(rounded["pos_embedding"])) == 0.0
    inv = vitkit.weights.inventory(tmp_path / "bf16.npz")
    assert set(inv.dtypes()) == {"bfloat16"}
