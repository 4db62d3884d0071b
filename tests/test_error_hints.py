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
from vitkit.training.config import WHERE

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


# --- training: a Python caller is told TrainConfig's keywords, a command-line user the train command's flags
KEYWORD_SAID = re.compile(r"\b[a-z_]+=")


def test_training_refusals_name_keywords_in_python_and_flags_on_the_command_line(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "report.json").write_text("{}")
    with pytest.raises(vitkit.ConfigError) as exc:
        vitkit.train(out=str(run), epochs=1)
    assert "Pass resume='auto' to continue it, overwrite=True to replace it, or another out=." in str(exc.value)
    assert f"out={str(run)!r} already holds" in str(exc.value) and "--" not in str(exc.value)
    err = _cli_error(capsys, "train", "--out", str(run), "--epochs", "1")
    assert f"--out {str(run)!r} already holds" in err and not KEYWORD_SAID.search(err), err
    assert "Pass --resume to continue it, --overwrite to replace it, or another --out." in err

    with pytest.raises(CheckpointError) as exc:
        vitkit.train(out=str(tmp_path / "nothere"), resume="auto", epochs=1)
    assert str(exc.value).startswith("resume='auto': out=") and "drop resume='auto'" in str(exc.value)
    err = _cli_error(capsys, "train", "--out", str(tmp_path / "nothere"), "--resume", "--epochs", "1")
    assert "error: --resume: --out " in err and "drop --resume to" in err and not KEYWORD_SAID.search(err), err

    with pytest.raises(vitkit.ConfigError) as exc:
        vitkit.train(lora_rank=4, freeze="backbone", out=str(tmp_path / "lora"))
    assert "lora_rank=4 trains only the adapters" in str(exc.value) and "freeze='backbone' cannot" in str(exc.value)
    err = _cli_error(capsys, "train", "--lora-rank", "4", "--freeze", "backbone", "--out", str(tmp_path / "lora"))
    assert "--lora-rank 4 trains only the adapters" in err and "--freeze 'backbone' cannot" in err, err
    assert not (tmp_path / "lora").exists()


def test_train_and_eval_flags_for_hints_are_their_own():
    from vitkit.cli import build_parser

    commands = build_parser("train", lazy=True)._subparsers._group_actions[0].choices
    train, evaluate = (commands[c].get_default("library_options") for c in ("train", "eval"))
    assert train["resume"] == "--resume" and train["lora_rank"] == "--lora-rank"
    assert train["multilabel_loss"] == "--loss" and train["model_overrides"] == "--set"
    assert "resume" not in evaluate and "multilabel_loss" not in evaluate
    assert evaluate["val_fraction"] == "--val-fraction"
    assert set(WHERE) - {"data"} <= set(train)  # every training setting's flag (DATA is positional)
    assert train["linear_probe"] == "--linear-probe" and evaluate["checkpoint"] == "--checkpoint"  # and the rest


def test_keyword_hints_stand_as_words():
    out, other = Hint("out='x'", option="out", cli="{flag} 'x'"), Hint("out=", option="out", cli="{flag}")
    err = VitkitError("layout=2 and out='x' here; or another out=.", hints=(other, out))
    assert err.for_cli({"out": "--out"}) == "layout=2 and --out 'x' here; or another --out."


# --- a use (predict, features) takes no loader option: its caller loads the model and passes it
def test_predict_and_features_advise_what_their_caller_can_do(files):
    img, depth2 = files / "x.png", files / "depth2.safetensors"
    for use in (lambda **kw: vitkit.predict(img, **kw), lambda **kw: vitkit.extract_features([img], **kw)):
        with pytest.raises(CheckpointError) as exc:
            use(model="vit_tiny_patch16_224", weights=depth2)
        said = str(exc.value)
        assert "vitkit.create_model(NAME, pretrained=FILE, strict=False) and pass the model" in said, said
        assert "model=FILE without weights= builds the model" in said and "pass strict=False" not in said
        with pytest.raises(CheckpointError) as exc:
            use(model=files / "unknown.safetensors")
        assert "vitkit.from_pretrained(FILE, format=...) and pass the model" in str(exc.value)
        assert "pass format=" not in str(exc.value)
    # the advice works: the model built that way is taken
    model = vitkit.create_model("vit_tiny_patch16_224", pretrained=depth2, strict=False)
    assert len(vitkit.predict(img, model=model, top_k=3)[0].top_k) == 3
    with pytest.raises(CheckpointError, match="pass strict=False to load"):  # create_model's own wording stays
        vitkit.create_model("vit_tiny_patch16_224", pretrained=depth2)


# --- images beyond the limits: a knob for every use, named as each entry point sets it
@pytest.fixture()
def tiny_limit(monkeypatch):
    from vitkit.data import images

    monkeypatch.setattr(images.LIMITS, "max_pixels", 1000)
    return images


def test_an_image_beyond_the_limit_says_how_to_raise_it_in_python(files, tiny_limit):
    small = files / "small.png"
    from PIL import Image

    Image.new("RGB", (20, 20)).save(small)
    big, ok = vitkit.predict([files / "x.png", small], model="vit_digits", top_k=1)  # x.png: 40x40 = 1,600 pixels
    assert "more than the limit of 1,000" in big.error and ok.error is None
    assert "load_image(path, max_pixels=N) and pass the image" in big.error
    assert "vitkit.data.images.LIMITS.max_pixels = N" in big.error
    image = tiny_limit.load_image(files / "x.png", max_pixels=2000)  # the advice works
    assert vitkit.predict(image, model="vit_digits", top_k=1)[0].error is None


def test_an_image_beyond_the_limit_says_the_environment_variable_on_the_command_line(files, tiny_limit, capsys,
                                                                                      tmp_path):
    from PIL import Image

    Image.new("RGB", (20, 20)).save(files / "small.png")
    args = ["predict", str(files / "x.png"), str(files / "small.png"), "--model", "vit_digits"]
    assert main(args) == 0
    skipped = next(line for line in capsys.readouterr().err.splitlines() if line.startswith("skipped"))
    assert skipped.endswith("raise the limit (set VITKIT_IMAGE_LIMITS=max_pixels=N).") and "load_image" not in skipped
    err = _cli_error(capsys, "predict", str(files / "x.png"), "--model", "vit_digits")  # the only image: the error
    assert "set VITKIT_IMAGE_LIMITS=max_pixels=N" in err and "LIMITS.max_pixels" not in err

    assert main(["features", str(files / "x.png"), str(files / "small.png"), "--model", "vit_digits",
                 "--out", str(tmp_path / "f.npy")]) == 0
    skipped = next(line for line in capsys.readouterr().err.splitlines() if line.startswith("skipped"))
    assert "set VITKIT_IMAGE_LIMITS=max_pixels=N" in skipped and "load_image" not in skipped


def test_training_data_log_lines_say_the_command_lines_wording(files, tiny_limit, tmp_path, caplog):
    """The data loader logs a skipped image with the error; the CLI says the error's hints in its terms."""
    from PIL import Image

    for name in ("a", "b"):
        (tmp_path / "data" / name).mkdir(parents=True)
        for j in range(2):
            Image.new("RGB", (20, 20), (80 * j, 30, 90)).save(tmp_path / "data" / name / f"{j}.png")
    (tmp_path / "data" / "a" / "big.png").write_bytes((files / "x.png").read_bytes())
    model = vitkit.create_model("vit_digits", num_classes=2, depth=1)
    vitkit.save_pretrained(model, tmp_path / "model")
    with caplog.at_level("WARNING", logger="vitkit"):
        assert main(["eval", str(tmp_path / "data"), "--model", str(tmp_path / "model"), "--workers", "0"]) == 0
    said = [r.getMessage() for r in caplog.records if "big.png" in r.getMessage()]
    assert said and all("set VITKIT_IMAGE_LIMITS=max_pixels=N" in s and "load_image" not in s for s in said), said


def test_the_image_limits_are_read_from_the_environment():
    import subprocess
    import sys

    code = "from vitkit.data.images import LIMITS; print(LIMITS.max_pixels)"
    env = {"VITKIT_IMAGE_LIMITS": "max_pixels=5000", "PYTHONPATH": str(SRC.parent)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.split() == ["5000"]


def test_a_dropped_hint_leaves_no_stray_space_but_file_suffixes_keep_theirs():
    from vitkit.errors import _tidy

    assert _tidy("Load it here  .") == "Load it here."
    assert _tidy("one , two ; (three )") == "one, two; (three)"
    assert _tidy("expected a file ending in .npy or .safetensors.") == "expected a file ending in .npy or .safetensors."


@pytest.mark.parametrize("argv, python_call, flag", [
    (["features", "README.md", "--model", "vit_digits", "--out", "{tmp}/x.txt"], "features", "--out"),
    (["attention", "README.md", "--model", "vit_digits", "--out", "{tmp}/a.jpg"], "attention", "--out"),
])
def test_output_refusals_name_out_as_the_caller_gave_it(argv, python_call, flag, tmp_path, capsys):
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    assert main(argv) == 2
    line = capsys.readouterr().err.strip()
    assert f"{flag} '{tmp_path}" in line and "out=" not in line, line
    with pytest.raises(VitkitError) as err:
        if python_call == "features":
            vitkit.extract_features(["README.md"], str(tmp_path / "x.txt"), model="vit_digits")
        else:
            vitkit.save_attention_map("README.md", str(tmp_path / "a.jpg"), model="vit_digits")
    assert f"out='{tmp_path}" in str(err.value) and "--out" not in str(err.value)
