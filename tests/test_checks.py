"""vitkit.checks: field checkers, the messages they give, and CLI flags generated from fields."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import pytest

from vitkit.checks import check_dataclass, checked, cli_arguments, limits_from_env, one_of, positive_int
from vitkit.config import PretrainedCfg, ViTConfig
from vitkit.errors import ConfigError


@dataclass
class Settings:
    batch_size: int = checked(32, positive_int, help="Images per step.")
    precision: str = checked("fp32", one_of(("fp32", "bf16")), help="Numeric precision.")
    compile: bool = checked(False, help="Compile the model.")
    ema: bool = checked(True, help="Keep an EMA.")
    note: str | None = checked(None, help="A note.")

    def __post_init__(self) -> None:
        check_dataclass(self, "Settings")


def test_a_field_check_names_the_field_the_value_and_what_was_expected() -> None:
    with pytest.raises(ConfigError, match=r"Settings\.batch_size=0 is not allowed: expected a positive integer"):
        Settings(batch_size=0)
    with pytest.raises(ConfigError, match=r"precision='fp23'.*one of fp32, bf16 \(did you mean 'fp32'\?\)"):
        Settings(precision="fp23")


def test_cli_arguments_build_a_parser_whose_values_the_dataclass_checks() -> None:
    parser = argparse.ArgumentParser()
    for arg in cli_arguments(Settings):
        arg.add_to(parser)
    ns = parser.parse_args(["--batch-size", "8", "--precision", "bf16", "--compile", "--no-ema", "--note", "x"])
    assert Settings(**vars(ns)) == Settings(batch_size=8, precision="bf16", compile=True, ema=False, note="x")
    assert Settings(**vars(parser.parse_args([]))) == Settings()
    specs = {a.dest: a.kwargs for a in cli_arguments(Settings)}
    assert specs["precision"]["choices"] == ("fp32", "bf16")
    assert specs["batch_size"]["type"] is int and specs["batch_size"]["help"] == "Images per step. (default: 32)"
    with pytest.raises(SystemExit):
        parser.parse_args(["--precision", "fp64"])


@pytest.mark.parametrize("field,value", [("posemb", 3), ("posemb_resample", ["timm"]), ("posemb", "rope")])
def test_every_vitconfig_field_is_checked(field: str, value: object) -> None:
    with pytest.raises(ConfigError, match=f"ViTConfig.{field}="):
        ViTConfig(**{field: value})


def test_pretrained_cfg_keeps_its_messages() -> None:
    with pytest.raises(ConfigError, match=r"PretrainedCfg\.crop_pct=1.5 is not allowed: expected a fraction in"):
        PretrainedCfg(crop_pct=1.5)


def test_limits_from_env_ignores_unknown_names_and_non_numbers(monkeypatch: pytest.MonkeyPatch) -> None:
    @dataclass
    class Limits:
        a: int = 1
        b: float = 2.0

    monkeypatch.setenv("X_LIMITS", "a=5, b=x, c=3")
    assert limits_from_env(Limits(), "X_LIMITS") == Limits(a=5, b=2.0)


def test_a_paper_style_model_name_suggests_registry_names() -> None:
    from vitkit import create_model
    from vitkit.errors import UnknownModelError

    with pytest.raises(UnknownModelError, match=r"Did you mean: vit_base_patch16_\w+"):
        create_model("ViT-B/16")
    with pytest.raises(UnknownModelError, match=r"Did you mean: vit_small_patch16"):
        create_model("vit-s-16")
