"""LoRA in `vitkit train`: only adapters + head train, exports are merged plain models plus the adapters alone,
and a resumed LoRA run ends bit-identical to an uninterrupted one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import vitkit
from test_train_common import TINY, TINY_MODEL, one_thread  # noqa: F401 (fixture)
from vitkit.cli import main
from vitkit.errors import ConfigError
from vitkit.lora import load_adapters
from vitkit.training import train
from vitkit.training.checkpoint import load_state
from vitkit.training.setup import build_model

pytestmark = pytest.mark.usefixtures("one_thread")
LORA = dict(lora_rank=4, lora_alpha=8.0, lora_targets=("qkv", "fc1"))


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random base model saved in vitkit's format (the model the adapters are trained on)."""
    torch.manual_seed(3)
    folder = tmp_path_factory.mktemp("base") / "base"
    vitkit.save_pretrained(build_model("vit_digits", num_classes=10, overrides=TINY_MODEL), folder)
    return folder


@pytest.fixture(scope="module")
def lora_run(base: Path, tmp_path_factory: pytest.TempPathFactory, one_thread: None) -> Path:  # noqa: F811
    out = tmp_path_factory.mktemp("lora")
    settings = {k: v for k, v in TINY.items() if k != "model_overrides"}
    train(**settings, **LORA, model=str(base), epochs=2, deterministic=True, out=str(out))
    return out


def test_only_the_adapters_and_the_head_train(lora_run: Path, base: Path):
    report = json.loads((lora_run / "report.json").read_text())
    state = load_state(lora_run / "checkpoint.pt")["model"]
    trained = {k: v for k, v in state.items() if ".lora_" in k or k.startswith("head.")}
    # 2 blocks x (qkv: 4 x (64 + 192), fc1 (mlp_ratio 2): 4 x (64 + 128)) + head 10 x 64 + 10
    assert report["summary"]["trainable_params"] == sum(v.numel() for v in trained.values()) == 2 * 4 * 448 + 650
    assert report["summary"]["lora"]["rank"] == 4 and report["summary"]["lora"]["adapted_linears"] == 4
    base_sd = vitkit.from_pretrained(base).state_dict()
    assert report["summary"]["params"] == sum(v.numel() for v in base_sd.values()) + 2 * 4 * 448
    for k, v in base_sd.items():  # the base weights did not move (the head did)
        if not k.startswith("head."):
            assert torch.equal(state[k], v), k
    assert not torch.equal(state["head.weight"], base_sd["head.weight"])
    assert all(state[k].abs().sum() > 0 for k in state if k.endswith("lora_B.weight"))  # B left zero-init


@pytest.mark.parametrize("which", ["best", "last"])
def test_exports_are_merged_plain_models_equal_to_base_plus_saved_adapters(lora_run: Path, base: Path, which: str):
    merged = vitkit.from_pretrained(lora_run / which)
    assert not any(".lora_" in k for k in merged.state_dict())
    adapted = load_adapters(vitkit.from_pretrained(base), lora_run / "adapters" / which)
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(merged.eval()(x), adapted.eval()(x), atol=1e-5, rtol=0)
    # a plain model, saveable in other formats (vit_digits' avg pooling + fc_norm: timm's only; tests/test_lora.py
    # saves merged models of other architectures in all four)
    vitkit.save_pretrained(merged, lora_run / f"export_{which}.safetensors", format="timm")


def test_a_resumed_lora_run_ends_bit_identical(lora_run: Path, base: Path, tmp_path: Path):
    settings = {k: v for k, v in TINY.items() if k != "model_overrides"}
    common = dict(**settings, **LORA, model=str(base), epochs=2, deterministic=True, out=str(tmp_path))
    assert not train(**common, max_steps=50).completed  # stops in the second epoch
    assert train(**common, resume="auto").completed
    a, b = load_state(lora_run / "checkpoint.pt")["model"], load_state(tmp_path / "checkpoint.pt")["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_the_cli_trains_lora_and_says_how_much_trains(base: Path, tmp_path: Path, capsys: pytest.CaptureFixture):
    code = main(["train", "--model", str(base), "--batch-size", "32", "--epochs", "1", "--max-steps", "3", "--no-plots",
                 "--export-samples", "0", "--lora-rank", "2", "--lora-targets", "qkv,proj", "--out", str(tmp_path)])
    assert code == 0
    out = capsys.readouterr().out
    # 2 blocks x (qkv: 2 x (64 + 192), proj: 2 x (64 + 64)) + head 650
    assert "2,186 trainable" in out and "LoRA r=2 alpha=16 on qkv,proj (4 linears)" in out


@pytest.mark.parametrize("argv, message", [
    (["--lora-rank", "4", "--freeze", "backbone"], "cannot be combined"),
    (["--lora-rank", "4", "--lora-targets", "qkv,mlp"], "--lora-targets qkv,mlp is not allowed"),
    (["--lora-rank", "-1"], "--lora-rank -1 is not allowed"),
])
def test_bad_lora_settings_fail_in_one_line(argv: list[str], message: str, tmp_path: Path,
                                            capsys: pytest.CaptureFixture):
    assert main(["train", *argv, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    with pytest.raises(ConfigError):
        train(**TINY, lora_rank=4, freeze="backbone", out=str(tmp_path))


def test_resuming_with_other_lora_settings_fails_clearly(lora_run: Path, base: Path, tmp_path: Path):
    settings = {k: v for k, v in TINY.items() if k != "model_overrides"}
    saved = str(lora_run / "checkpoint.pt")
    # the resume check of every schedule-shaping setting names the LoRA ones like the others
    with pytest.raises(ConfigError, match="lora_rank: checkpoint 4, now 0"):
        train(**settings, model=str(base), epochs=2, out=str(tmp_path), resume=saved)
    with pytest.raises(ConfigError, match="lora_rank: checkpoint 4, now 2"):
        train(**settings, **{**LORA, "lora_rank": 2}, model=str(base), epochs=2, out=str(tmp_path), resume=saved)
