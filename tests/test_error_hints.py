"""Every hint names an option of the entry point the user called: the library's keyword arguments in Python
(and the function then takes them), the command's own flags on the command line (or none at all)."""

from __future__ import annotations

import importlib
import pkgutil
import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import vitkit
from vitkit.cli import main
from vitkit.errors import CheckpointError, Hint, VitkitError

SRC = Path(vitkit.__file__).parent
# library keywords a hint may name (`num_classes=`, `img_size=` also describe an architecture: only as advice)
KEYWORD = re.compile(r"\b(strict|format|pretrained|num_heads|posemb|allow_nonfinite|weights)=|"
                     r"\b[Pp]ass (num_classes|img_size)=")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("hints")
    short = vitkit.create_model("vit_tiny_patch16_224", depth=2)
    save_file(short.state_dict(), str(tmp / "depth2.safetensors"))
    save_file({"foo": torch.zeros(3)}, str(tmp / "unknown.safetensors"))
    nan = {k: v.clone() for k, v in vitkit.create_model("vit_digits").state_dict().items()}
    nan["blocks.0.norm1.weight"][0] = float("nan")
    save_file(nan, str(tmp / "nan.safetensors"))
    from PIL import Image

    Image.new("RGB", (40, 40), (10, 200, 30)).save(tmp / "x.png")
    return tmp


def test_create_model_takes_every_option_its_hints_name(files):
    with pytest.raises(CheckpointError, match="strict=False") as exc:
        vitkit.create_model("vit_tiny_patch16_224", pretrained=files / "depth2.safetensors")
    assert "from_pretrained(FILE)" in str(exc.value)
    model = vitkit.create_model("vit_tiny_patch16_224", pretrained=files / "depth2.safetensors", strict=False)
    ref = vitkit.from_pretrained(files / "depth2.safetensors")
    torch.testing.assert_close(model.blocks[1].attn.qkv.weight, ref.blocks[1].attn.qkv.weight, atol=0, rtol=0)
    assert "blocks.2.attn.qkv.weight" in model.load_report.newly_initialized

    with pytest.raises(CheckpointError, match=r"pass format= one of them"):
        vitkit.create_model("vit_tiny_patch16_224", pretrained=files / "unknown.safetensors")
    with pytest.raises(CheckpointError, match="does not fit") as exc:  # the format is taken, the tensors do not fit
        vitkit.create_model("vit_tiny_patch16_224", pretrained=files / "unknown.safetensors", format="timm")

    with pytest.raises(CheckpointError, match="allow_nonfinite=True"):
        vitkit.create_model("vit_digits", pretrained=files / "nan.safetensors")
    loaded = vitkit.create_model("vit_digits", pretrained=files / "nan.safetensors", allow_nonfinite=True)
    assert torch.isnan(loaded.blocks[0].norm1.weight[0])


def _cli_error(capsys, *argv: str) -> str:
    assert main(list(argv)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    return err


def test_cli_hints_name_the_commands_flags_or_none(files, capsys):
    img, depth2, unknown = str(files / "x.png"), str(files / "depth2.safetensors"), str(files / "unknown.safetensors")
    err = _cli_error(capsys, "predict", img, "--model", "vit_tiny_patch16_224", "--weights", depth2)
    assert "--model FILE without --weights builds the model" in err
    assert not KEYWORD.search(err) and "from_pretrained" not in err and "not-strict" not in err  # predict has none

    err = _cli_error(capsys, "predict", img, "--model", unknown)
    assert "vitkit convert FILE OUT --from FORMAT --to vitkit" in err and not KEYWORD.search(err)
    err = _cli_error(capsys, "convert", unknown, str(files / "out"), "--to", "vitkit")
    assert "pass --from with one of them" in err and not KEYWORD.search(err)
    assert main(["weights", unknown]) == 0
    note = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("note:"))
    assert "pass --format with one of them" in note and not KEYWORD.search(note)

    err = _cli_error(capsys, "predict", img, "--model", "vit_digits", "--weights", "pretrained")
    assert "--weights pretrained cannot load any" in err and "--weights PATH" in err and not KEYWORD.search(err)
    err = _cli_error(capsys, "predict", img, "--model", depth2, "--weights", depth2)
    assert "--model NAME --weights SOURCE or --model SOURCE alone" in err
    err = _cli_error(capsys, "predict", img, "--model", "vit_digits", "--weights", str(files / "nan.safetensors"))
    assert "set VITKIT_ALLOW_NONFINITE=1" in err and not KEYWORD.search(err)


def test_convert_says_its_not_strict_flag(files, capsys):
    """convert builds the model the file states; a wrong --num-classes head is loaded only with --not-strict."""
    folder = files / "digits"
    vitkit.save_pretrained(vitkit.create_model("vit_digits", depth=1), folder)
    state = {k: v for k, v in vitkit.from_pretrained(folder).state_dict().items() if k != "head.bias"}
    save_file(state, str(folder / "model.safetensors"))  # config.json still states the head
    err = _cli_error(capsys, "convert", str(folder), str(files / "o"), "--to", "timm")
    assert "pass --not-strict to load the tensors that fit" in err and not KEYWORD.search(err)
    assert main(["convert", str(folder), str(files / "o"), "--to", "timm", "--not-strict"]) == 0
    with pytest.raises(CheckpointError, match="pass strict=False"):
        vitkit.from_pretrained(folder)


def _module_hints() -> list[tuple[str, str, Hint]]:
    found = []
    for info in pkgutil.walk_packages([str(SRC)], prefix="vitkit."):
        if info.name.startswith(("vitkit.serve", "vitkit.ray", "vitkit.openvino")):
            continue  # optional dependencies; they define no hints
        module = importlib.import_module(info.name)
        found += [(info.name, name, value) for name, value in vars(module).items() if isinstance(value, Hint)]
    return found


def test_every_hints_cli_wording_names_no_library_keyword():
    hints = _module_hints()
    assert len(hints) >= 15  # the loaders', the registry's, the runtime's
    for module, name, hint in hints:
        for flags in ({}, {hint.option: "--flag"} if hint.option else {}):
            said = hint.for_cli(flags)
            for sentence in re.split(r"(?<=\.) ", said):
                assert not KEYWORD.search(sentence) or "in Python" in sentence, (module, name, said)
        assert "{flag}" not in hint.text and (hint.option is None or "{flag}" in hint.cli), (module, name)


def test_library_messages_say_option_hints_only_through_hint():
    """A message naming strict=/format= must be a Hint's library text (which the CLI rewords), or the wording of a
    hint for another entry point (a table keyed by the hint, ``NOT_STRICT: "..."``)."""
    pattern = re.compile(r"""["'][^"'\n]*\b(pass strict=|pass format=|with format=|format='(?:vitkit|timm))""")
    offenders = []
    for path in SRC.rglob("*.py"):
        if path.parts[-2] == "cli":
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if pattern.search(line) and "Hint(" not in line and not re.match(r"\s*[A-Z_]+: ", line):
                offenders.append(f"{path.relative_to(SRC)}:{number}: {line.strip()}")
    assert not offenders, "\n".join(offenders)


def test_dropped_hints_leave_clean_sentences():
    err = VitkitError("It does not fit (see the table), or pass strict=False to load what fits.\n  a  b",
                      hints=(Hint(", or pass strict=False to load what fits", option="strict",
                                  cli=", or pass {flag} to load what fits"),))
    assert err.for_cli({}) == "It does not fit (see the table).\n  a  b"  # the table below keeps its columns
    assert err.for_cli({"strict": "--not-strict"}).startswith("It does not fit (see the table), or pass --not-strict")
    assert str(err).startswith("It does not fit (see the table), or pass strict=False")  # Python keeps its words
