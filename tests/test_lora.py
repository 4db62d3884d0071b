"""LoRA adapters: freezing, merge equality in every save format, adapters saved alone and loaded back."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

import vitkit
from vitkit.errors import CheckpointError, ConfigError
from vitkit.lora import (
    ADAPTER_CONFIG,
    ADAPTER_WEIGHTS,
    LoRAConfig,
    LoRALinear,
    apply_lora,
    load_adapters,
    lora_layers,
    merge_lora,
    save_adapters,
    trainable_parameters,
)

TOL = 1e-5
NAME = "test_lora_tiny"
TINY = dict(img_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=2, mlp_ratio=2.0, num_classes=5)
ALL = ("qkv", "proj", "fc1", "fc2")


@pytest.fixture(scope="module", autouse=True)
def _registered():
    """A tiny registry entry for this module only (registered at import, it would join other modules'
    parametrisations over list_models())."""
    vitkit.register(vitkit.ModelEntry(name=NAME, config=TINY, pretrained_cfg=vitkit.PretrainedCfg(
        input_size=(3, 32, 32), num_classes=5, label_names=None)))
    yield
    vitkit.registry._REGISTRY.pop(NAME)  # no public unregister


def _images(n: int = 3) -> torch.Tensor:
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(1))


def _base(seed: int = 0) -> vitkit.VisionTransformer:
    torch.manual_seed(seed)
    return vitkit.create_model(NAME).eval()


def _randomize_adapters(model: torch.nn.Module, seed: int = 2) -> None:
    """Non-zero B (a fresh adapter is an exact no-op, which would hide a wrong merge)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in lora_layers(model).values():
            layer.lora_B.weight.copy_(torch.randn(layer.lora_B.weight.shape, generator=gen) * 0.05)


def _adapted(targets=ALL, **kw) -> vitkit.VisionTransformer:
    model = apply_lora(_base(), LoRAConfig(rank=4, alpha=8, targets=targets, **kw))
    _randomize_adapters(model)
    return model.eval()


@pytest.mark.parametrize("field, value", [("rank", 0), ("rank", 2.5), ("alpha", 0), ("alpha", float("nan")),
                                          ("dropout", 1.0), ("targets", ("qkv", "query")), ("targets", ()),
                                          ("targets", ("qkv", "qkv"))])
def test_config_rejects_bad_values(field, value):
    with pytest.raises(ConfigError, match=f"LoRAConfig.{field}"):
        LoRAConfig(**{field: value})


def test_config_round_trips_through_dict():
    cfg = LoRAConfig(rank=2, alpha=4, dropout=0.1, targets=["fc1", "qkv"])
    assert cfg.targets == ("fc1", "qkv")
    assert LoRAConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    with pytest.raises(ConfigError, match="Unknown LoRAConfig field"):
        LoRAConfig.from_dict({"rnak": 4})


def test_apply_wraps_targets_and_freezes_all_but_adapters_and_head():
    model = _base()
    x = _images()
    before = model(x)
    qkv_weight = model.blocks[0].attn.qkv.weight
    apply_lora(model, LoRAConfig(rank=4, targets=("qkv", "fc2")))
    assert sorted(lora_layers(model)) == ["blocks.0.attn.qkv", "blocks.0.mlp.fc2", "blocks.1.attn.qkv",
                                          "blocks.1.mlp.fc2"]
    assert model.blocks[0].attn.qkv.weight is qkv_weight  # taken over, not copied
    assert not isinstance(model.blocks[0].attn.proj, LoRALinear)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {f"blocks.{i}.{t}.lora_{ab}.weight" for i in range(2) for t in ("attn.qkv", "mlp.fc2")
                         for ab in "AB"} | {"head.weight", "head.bias"}
    # the base parameter names are unchanged, so a base checkpoint still loads into the adapted model
    assert "blocks.0.attn.qkv.weight" in model.state_dict()
    assert torch.equal(model(x), before)  # B starts at zero
    counts = trainable_parameters(model)
    lora_params = 2 * 4 * (64 + 192) + 2 * 4 * (128 + 64)
    assert counts["trainable"] == lora_params + 5 * 64 + 5
    assert counts["total"] == sum(p.numel() for p in _base().parameters()) + lora_params


def test_a_training_step_changes_only_adapters_and_head():
    model = apply_lora(_base(), LoRAConfig(rank=4, targets=ALL)).train()
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    for _ in range(2):  # B is zero at first, so A gets its gradient from the second step on
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(_images()), torch.tensor([0, 1, 2])).backward()
        opt.step()
    assert all(torch.equal(p, frozen[n]) for n, p in model.named_parameters() if n in frozen)
    assert all(p.grad is None for n, p in model.named_parameters() if n in frozen)
    layer = model.blocks[1].mlp.fc1
    assert layer.lora_A.weight.grad.abs().sum() > 0 and layer.lora_B.weight.abs().sum() > 0


def test_refuses_a_second_application_and_other_models():
    model = _adapted()
    with pytest.raises(ConfigError, match="already has LoRA"):
        apply_lora(model, LoRAConfig())
    with pytest.raises(ConfigError, match="VisionTransformer"):
        apply_lora(torch.nn.Linear(2, 2), LoRAConfig())


def test_dropout_is_inactive_in_eval_mode():
    model = _adapted(dropout=0.5)
    x = _images()
    out = model(x)
    assert torch.equal(model(x), out)
    model.train()
    assert not torch.allclose(model(x), model(x))  # active while training
    model.eval()
    merged = merge_lora(_adapted(dropout=0.5))
    assert (merged(x) - out).abs().max() <= TOL


def test_merge_gives_a_plain_model_with_equal_outputs():
    model = _adapted()
    x = _images()
    expected = model(x)
    merged = merge_lora(model)
    assert merged is model and not lora_layers(merged) and not hasattr(merged, "lora_config")
    assert all(type(m) is torch.nn.Linear for n, m in merged.named_modules() if n.endswith(("qkv", "fc1")))
    assert all(p.requires_grad for p in merged.parameters())
    assert set(merged.state_dict()) == set(_base().state_dict())
    assert (merged(x) - expected).abs().max() <= TOL
    assert (merged(x) - _base()(x)).abs().max() > 1e-3  # the adapters did change the function


@pytest.mark.parametrize("fmt, dest", [("vitkit", "m"), ("timm", "m"), ("hf", "m"), ("npz", "m.npz")])
def test_merged_model_saves_to_every_format_with_equal_outputs(tmp_path, fmt, dest):
    model = _adapted()
    x = _images()
    expected = model(x)
    path = vitkit.save_pretrained(merge_lora(model), tmp_path / dest, format=fmt)
    reloaded = vitkit.create_model(NAME, pretrained=path) if fmt == "npz" else vitkit.from_pretrained(path)
    assert reloaded.load_report.format == fmt and reloaded.load_report.ok
    assert (reloaded(x) - expected).abs().max() <= TOL


def _fine_tuned(base_dir) -> vitkit.VisionTransformer:
    """The saved base with a fresh 3-class head and trained-looking adapters."""
    model = vitkit.from_pretrained(base_dir)
    model.reset_classifier(3)
    model.pretrained_cfg = model.pretrained_cfg.replace(num_classes=3, label_names=("a", "b", "c"))
    apply_lora(model, LoRAConfig(rank=2, alpha=4, targets=("qkv", "fc1")))
    _randomize_adapters(model)
    return model.eval()


def test_adapters_saved_alone_load_onto_a_fresh_base(tmp_path):
    vitkit.save_pretrained(_base(), tmp_path / "base")
    model = _fine_tuned(tmp_path / "base")
    out = save_adapters(model, tmp_path / "adapters")
    saved = load_file(out / ADAPTER_WEIGHTS)
    assert all(".lora_" in k or k.startswith("head.") for k in saved) and len(saved) == 2 * 2 * 2 + 2
    meta = json.loads((out / ADAPTER_CONFIG).read_text())
    assert meta["lora"]["rank"] == 2 and meta["num_classes"] == 3
    fresh = load_adapters(vitkit.from_pretrained(tmp_path / "base"), out)
    x = _images()
    assert fresh.num_classes == 3 and fresh.pretrained_cfg.label_names == ("a", "b", "c")
    assert (fresh.eval()(x) - model(x)).abs().max() <= 1e-6
    assert trainable_parameters(fresh) == trainable_parameters(model)


def test_adapters_on_a_different_base_are_refused(tmp_path):
    model = _adapted()
    save_adapters(model, tmp_path / "a")
    other = vitkit.create_model(NAME, depth=3)
    with pytest.raises(CheckpointError, match="another architecture"):
        load_adapters(other, tmp_path / "a")
    assert not lora_layers(other)  # validated before anything changed
    # a different class count is fine: the head is part of what was saved
    assert load_adapters(vitkit.create_model(NAME, num_classes=9), tmp_path / "a").num_classes == 5


def test_an_adapter_file_with_wrong_shapes_is_refused(tmp_path):
    out = save_adapters(_adapted(), tmp_path / "a")
    state = load_file(out / ADAPTER_WEIGHTS)
    state["blocks.0.attn.qkv.lora_A.weight"] = torch.zeros(3, 64)  # rank 3 where the config says 4
    save_file(state, str(out / ADAPTER_WEIGHTS))
    model = _base()
    with pytest.raises(CheckpointError, match=r"mis-shaped: blocks.0.attn.qkv.lora_A.weight: expected \(4, 64\)"):
        load_adapters(model, out)
    assert not lora_layers(model)
    del state["blocks.1.mlp.fc2.lora_B.weight"]
    save_file(state, str(out / ADAPTER_WEIGHTS))
    with pytest.raises(CheckpointError, match="missing: blocks.1.mlp.fc2.lora_B.weight"):
        load_adapters(model, out)


def test_unreadable_adapter_folders_are_refused(tmp_path):
    with pytest.raises(CheckpointError, match="holds no adapter_config.json"):
        load_adapters(_base(), tmp_path)
    out = save_adapters(_adapted(), tmp_path / "a")
    (out / ADAPTER_WEIGHTS).write_bytes(b"not safetensors")
    with pytest.raises(CheckpointError, match="is not a weight file vitkit can read"):
        load_adapters(_base(), out)
    (out / ADAPTER_CONFIG).write_text('{"format": "other"}')
    with pytest.raises(CheckpointError, match="not a vitkit LoRA adapter config"):
        load_adapters(_base(), out)
    with pytest.raises(ConfigError, match="no LoRA adapters to save"):
        save_adapters(_base(), tmp_path / "b")
