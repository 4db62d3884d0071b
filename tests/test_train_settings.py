"""Training settings: declared once (group field + metadata), flags generated from them, each group checking
itself, one flat name per setting for keywords, report.json and flags."""

from __future__ import annotations

import argparse
import dataclasses

import pytest

import vitkit
from vitkit.cli import main
from vitkit.cli.train import _add_train_args, config_from_args
from vitkit.cli.train_flags import setting_flags
from vitkit.errors import ConfigError
from vitkit.training.config import GROUPS, WHERE, OptimSettings, SourceSettings, TrainConfig, flag_of, flat_name

# a value other than the default for every setting, as Python holds it and as the command line spells it
SAMPLES = {
    "data": None, "labels": ("l.csv", ["l.csv"]), "val_labels": ("v.csv", ["v.csv"]),
    "hf_dataset": ("ds", ["ds"]), "image_column": ("img", ["img"]), "label_column": ("lab", ["lab"]),
    "multi_label": (True, []), "threshold": (0.3, ["0.3"]), "val_fraction": (0.25, ["0.25"]), "workers": (3, ["3"]),
    "model": ("vit_tiny_patch16_224", ["vit_tiny_patch16_224"]), "weights": ("w.safetensors", ["w.safetensors"]),
    "model_overrides": ({"depth": 2, "act_layer": "gelu"}, ["depth=2", "--set", "act_layer=gelu"]),
    "img_size": (48, ["48"]), "max_patches": (64, ["64"]), "freeze": ("blocks:2", ["blocks:2"]),
    "grad_checkpointing": (True, []),
    "compile": (True, []), "epochs": (3, ["3"]), "batch_size": (8, ["8"]), "accum_steps": (2, ["2"]),
    "eval_batch_size": (64, ["64"]), "lr": (0.001, ["0.001"]), "min_lr": (0.0, ["0"]),
    "weight_decay": (0.1, ["0.1"]), "warmup_epochs": (0.5, ["0.5"]), "layer_decay": (0.8, ["0.8"]),
    "label_smoothing": (0.0, ["0"]), "clip_grad": (None, ["0"]), "precision": ("bf16", ["bf16"]),
    "multilabel_loss": ("asl", ["asl"]), "max_steps": (7, ["7"]), "ema": (0.99, ["0.99"]),
    "aug": ("randaugment", ["randaugment"]), "magnitude": (5, ["5"]), "hflip": (0.25, ["0.25"]),
    "crop_scale": ((0.5, 1.0), ["0.5", "1"]), "crop_ratio": ((0.9, 1.1), ["0.9", "1.1"]), "mixup": (0.2, ["0.2"]),
    "cutmix": (1.0, ["1"]), "teacher": ("vit_digits", ["vit_digits"]), "teacher_weights": ("t.pth", ["t.pth"]),
    "distill": ("soft", ["soft"]), "distill_alpha": (0.7, ["0.7"]), "distill_tau": (2.0, ["2"]),
    "lora_rank": (4, ["4"]), "lora_alpha": (8.0, ["8"]), "lora_dropout": (0.1, ["0.1"]),
    "lora_targets": (("qkv", "fc1"), ["qkv,fc1"]), "out": ("runs/x", ["runs/x"]), "overwrite": (True, []),
    "seed": (5, ["5"]), "deterministic": (True, []), "threads": (2, ["2"]), "device": ("cpu", ["cpu"]),
    "resume": ("runs/x/checkpoint.pt", ["runs/x/checkpoint.pt"]), "save_every_steps": (10, ["10"]),
    "export_samples": (1, ["1"]), "plots": (False, []), "log_every": (5, ["5"]),
    "report_to": (("tensorboard",), ["tensorboard"]), "strategy": ("fsdp", ["fsdp"]),
}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser()
    _add_train_args(p)
    return p


def test_every_setting_has_a_sample_and_one_flag() -> None:
    """A new setting needs a row above; each setting that has a flag has exactly one, and no flag is extra."""
    assert set(SAMPLES) == set(WHERE)
    flags = [a.option_strings for a in _parser()._actions if a.option_strings and a.dest != "help"]
    by_flag = {flag for option in flags for flag in option}
    flags_of = setting_flags(_parser())
    assert by_flag == {*flags_of.values(), "--linear-probe"}
    assert len(flags_of) == len(set(flags_of.values())) == len(WHERE) - 1  # DATA is positional


@pytest.mark.parametrize("name", sorted(n for n in SAMPLES if n != "data"))
def test_each_flag_gives_its_setting(name: str) -> None:
    value, tokens = SAMPLES[name]
    group, field = WHERE[name]
    parser = _parser()
    args = parser.parse_args([setting_flags(parser)[name], *tokens])
    cfg = config_from_args(args)
    assert getattr(getattr(cfg, group), field) == value
    # and nothing else moved from its default
    default = TrainConfig()
    others = {k: v for k, v in cfg.flat().items() if k != name}
    assert others == {k: v for k, v in default.flat().items() if k != name}


def test_without_flags_the_command_line_gives_the_defaults() -> None:
    assert config_from_args(_parser().parse_args([])).flat() == TrainConfig().flat()


def test_flat_names_and_groups_are_one_setting() -> None:
    cfg = TrainConfig(lr=1e-3, lora_rank=8, distill_alpha=0.2, data="folder")
    assert (cfg.optim.lr, cfg.lora.rank, cfg.distillation.alpha, cfg.source.data) == (1e-3, 8, 0.2, "folder")
    assert TrainConfig(optim=OptimSettings(lr=1e-3)).optim.lr == 1e-3
    with pytest.raises(ConfigError, match="lr given twice"):
        TrainConfig(optim=OptimSettings(), lr=1e-3)
    with pytest.raises(AttributeError, match=r"cfg\.optim\.lr"):
        _ = cfg.lr
    again = TrainConfig.from_dict(cfg.to_dict())
    assert again.flat() == cfg.flat() and isinstance(again.lora.targets, tuple)
    for group, cls in GROUPS.items():  # every field's flat name maps back to it
        for f in dataclasses.fields(cls):
            assert WHERE[flat_name(f)] == (group, f.name) and flag_of(f).startswith("--")


def test_each_group_checks_itself() -> None:
    with pytest.raises(ConfigError, match="accum_steps=0"):
        OptimSettings(accum_steps=0).validate()
    with pytest.raises(ConfigError, match="batch_size=10 .*multiple of accum_steps=3"):
        OptimSettings(batch_size=10, accum_steps=3).validate()
    with pytest.raises(ConfigError, match="Give one data source"):
        SourceSettings(data="a", labels="b.csv").validate()
    SourceSettings(data="a").validate()


@pytest.mark.parametrize("flat,value,flag", [("lora_rank", -1, "--lora-rank"), ("warmup_epochs", -1.0,
                                                                                  "--warmup-epochs"),
                                              ("report_to", ("nope",), "--report-to")])
def test_a_bad_setting_is_named_as_the_caller_gave_it(flat, value, flag, capsys, tmp_path) -> None:
    with pytest.raises(ConfigError) as err:
        vitkit.train(out=str(tmp_path / "run"), **{flat: value})
    assert f"{flat}=" in str(err.value) and flag not in str(err.value)
    cli_value = ",".join(value) if isinstance(value, tuple) else str(value)
    assert main(["train", "--out", str(tmp_path / "run"), f"{flag}={cli_value}"]) == 2
    line = capsys.readouterr().err.strip()
    assert flag in line and f"{flat}=" not in line and line.count("\n") == 0, line
