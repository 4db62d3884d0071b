"""What trains and how: freezing, AdamW groups (decay, layer-wise lr), warmup + cosine, sharded batches."""

from __future__ import annotations

import math
import re

import pytest
import torch

import vitkit
from vitkit.errors import ConfigError
from vitkit.training.config import TrainConfig, parse_freeze
from vitkit.training.distributed import GlobalBatchSampler, ShardBatchSampler
from vitkit.training.optim import WarmupCosine, apply_freeze, build_optimizer, layer_id, param_groups


def _model(**kw):
    return vitkit.create_model("vit_digits", embed_dim=32, depth=3, num_heads=2, **kw)


def test_no_weight_decay_on_norms_biases_embeddings_and_tokens():
    model = _model(global_pool="token", class_token=True)
    groups = param_groups(model, weight_decay=0.05)
    names = {id(p): n for n, p in model.named_parameters()}
    no_decay = {names[id(p)] for g in groups if g["weight_decay"] == 0.0 for p in g["params"]}
    decay = {names[id(p)] for g in groups if g["weight_decay"] > 0 for p in g["params"]}
    assert {"pos_embed", "cls_token", "blocks.0.norm1.weight", "blocks.0.attn.qkv.bias", "head.bias"} <= no_decay
    assert {"patch_embed.proj.weight", "blocks.0.attn.qkv.weight", "head.weight"} <= decay
    assert no_decay.isdisjoint(decay) and len(no_decay | decay) == len(list(model.parameters()))


def test_layer_wise_lr_decay():
    model = _model()
    assert layer_id("pos_embed", 3) == 0 and layer_id("blocks.2.mlp.fc1.weight", 3) == 3
    assert layer_id("head.weight", 3) == 4 and layer_id("fc_norm.weight", 3) == 4
    opt = build_optimizer(model, lr=1.0, weight_decay=0.05, layer_decay=0.5)
    lrs = {g["layer"]: g["lr"] for g in opt.param_groups}
    assert lrs == {0: 0.5 ** 4, 1: 0.5 ** 3, 2: 0.25, 3: 0.5, 4: 1.0}
    flat = build_optimizer(model, lr=1.0, weight_decay=0.05, layer_decay=1.0)
    assert {g["lr"] for g in flat.param_groups} == {1.0} and len(flat.param_groups) == 2


@pytest.mark.parametrize("spec, expect", [("none", None), ("backbone", 0), ("blocks:2", 2), (" blocks:0 ", 0)])
def test_parse_freeze(spec: str, expect: int | None):
    assert parse_freeze(spec) == expect


@pytest.mark.parametrize("spec", ["all", "blocks:", "blocks:-1", "head", "blocks:x"])
def test_bad_freeze_raises_config_error_with_the_choices(spec: str):
    with pytest.raises(ConfigError, match="backbone"):
        parse_freeze(spec)


def test_freezing_counts_and_choices():
    model = _model()
    total = sum(p.numel() for p in model.parameters())
    assert apply_freeze(model, "none") == (total, total)
    trainable, _ = apply_freeze(model, "backbone")
    assert trainable == sum(p.numel() for p in model.head.parameters())
    trainable, _ = apply_freeze(model, "blocks:1")
    expected = sum(p.numel() for m in (model.blocks[2], model.fc_norm, model.head) for p in m.parameters())
    assert trainable == expected
    assert not model.blocks[1].attn.qkv.weight.requires_grad and model.blocks[2].attn.qkv.weight.requires_grad
    assert not model.pos_embed.requires_grad
    with pytest.raises(ConfigError, match="more blocks than the model has"):
        apply_freeze(model, "blocks:4")
    apply_freeze(model, "backbone")
    assert all(g["params"] for g in param_groups(model, weight_decay=0.1))


def test_warmup_then_cosine():
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.AdamW([{"params": [p], "lr_scale": 0.5}], lr=1.0)
    sched = WarmupCosine(opt, base_lr=1.0, total_steps=10, warmup_steps=2, min_lr=0.1)
    lrs = []
    for _ in range(10):
        lrs.append(sched.apply())
        sched.step()
    assert lrs[0] == pytest.approx(0.5) and lrs[1] == pytest.approx(1.0)
    assert lrs[2] == pytest.approx(1.0) and lrs[-1] > 0.1 and all(a >= b for a, b in zip(lrs[1:], lrs[2:]))
    assert sched.lr_at(10) == pytest.approx(0.1)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.5 * lrs[-1])
    mid = 2 + 4
    assert sched.lr_at(mid) == pytest.approx(0.1 + 0.45 * (1 + math.cos(math.pi * 0.5)))
    again = WarmupCosine(opt, base_lr=1.0, total_steps=10, warmup_steps=2, min_lr=0.1)
    again.load_state_dict(sched.state_dict())
    assert again.step_count == 10


def test_ranks_together_see_exactly_the_single_process_batches():
    single = list(GlobalBatchSampler(103, global_batch=8, seed=4, epoch=2))
    r0 = list(GlobalBatchSampler(103, global_batch=8, rank=0, world_size=2, seed=4, epoch=2))
    r1 = list(GlobalBatchSampler(103, global_batch=8, rank=1, world_size=2, seed=4, epoch=2))
    assert len(single) == len(r0) == len(r1) == 12  # the incomplete last batch is dropped
    for s, a, b in zip(single, r0, r1):
        assert sorted(s) == sorted(a + b) and len(a) == len(b) == 4
    resumed = list(GlobalBatchSampler(103, global_batch=8, seed=4, epoch=2, start_batch=5))
    assert resumed == single[5:]
    assert list(GlobalBatchSampler(103, global_batch=8, seed=4, epoch=3)) != single
    with pytest.raises(ConfigError, match="multiple of 3"):
        GlobalBatchSampler(10, global_batch=8, world_size=3)


def test_evaluation_shards_cover_every_sample_once():
    shards = [[i for b in ShardBatchSampler(11, batch_size=2, rank=r, world_size=3) for i in b] for r in range(3)]
    assert sorted(sum(shards, [])) == list(range(11))


@pytest.mark.parametrize("bad", [dict(epochs=0), dict(lr=-1.0), dict(batch_size=10, accum_steps=3),
                                 dict(layer_decay=1.5), dict(precision="fp8"), dict(freeze="heads"),
                                 dict(label_smoothing=1.0)])
def test_bad_training_settings_raise_config_error(bad: dict):
    key, value = next(iter(bad.items()))  # the message names the setting's value
    with pytest.raises(ConfigError, match=re.escape(repr(value) if isinstance(value, str) else f"{key}={value}")):
        TrainConfig(**bad).resolved()


def test_presets_fill_unset_fields():
    digits = TrainConfig().resolved()
    assert (digits.network.model, digits.run.out, digits.augment.hflip, digits.optim.layer_decay,
            digits.run.threads) == ("vit_digits", "runs/digits", 0.0, 1.0, 1)
    folder = TrainConfig(data="some/folder", weights="w.safetensors").resolved()
    assert folder.augment.hflip == 0.5 and folder.augment.aug == "trivial" and folder.optim.layer_decay == 0.75 \
        and folder.run.threads is None
    assert TrainConfig(data="some/folder", lr=1e-3).resolved().optim.lr == 1e-3
    with pytest.raises(ConfigError, match="did you mean 'epochs'"):
        TrainConfig.from_dict({"epoch": 3})
