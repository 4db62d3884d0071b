"""Hostile LoRA adapter folders (``vitkit.lora.load_adapters``, ``--model base --adapters DIR``): config and
weights that are FIFOs, devices, folders, missing, pickles with a payload, deep or mistyped JSON, heads with
hostile class counts or names, tensors that are NaN, Inf, integers or mis-shaped, another architecture's
hash, and seeded byte mutations and field swaps. Every refusal must leave the model as it was (no adapters,
no new head); a load must give exactly the saved adapters.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from corpus import HOSTILE_VALUES, Case, replace_file
from safetensors.torch import load_file, save_file

import vitkit
from vitkit.config import ViTConfig

CATEGORY = "adapters"
CONFIG, WEIGHTS = "adapter_config.json", "adapter_model.safetensors"
TINY = ViTConfig(img_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=2, mlp_ratio=2.0, num_classes=5)
Make = Callable[[], dict[str, Any]]


def _base() -> vitkit.VisionTransformer:
    torch.manual_seed(0)
    model = vitkit.VisionTransformer(TINY).eval()
    model.pretrained_cfg = vitkit.PretrainedCfg(input_size=(3, 32, 32), num_classes=5, label_names=None)
    return model


def act_adapters(case: dict[str, Any]) -> str:
    """Load the adapters onto a fresh base; a refusal must have left it unchanged, a load must equal the saved."""
    from vitkit.errors import VitkitError
    from vitkit.lora import load_adapters, lora_layers

    model = _base()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    try:
        load_adapters(model, case["path"])
    except VitkitError:
        state = model.state_dict()
        if lora_layers(model) or model.num_classes != TINY.num_classes or state.keys() != before.keys() or \
                not all(torch.equal(state[k], before[k]) for k in before):
            raise AssertionError("the model changed although its adapters were refused") from None
        raise
    ref = load_file(case["ref"])
    state = model.state_dict()
    return "loaded" if all(k in state and torch.equal(state[k], v) for k, v in ref.items()) else "loaded-different"


ACTIONS = {"adapters": act_adapters}


class _Exploit:
    """A pickle that would create a marker file if a loader ran it."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.marker}",))


class _Saved:
    """Adapters (rank 2, a new 3-class head) saved once, and the adapted state a sound load must give."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.folder, self.ref = root / "bases" / "adapters", root / "bases" / "adapted.safetensors"

    def ensure(self) -> Path:
        if not self.folder.exists():
            from vitkit.lora import LoRAConfig, apply_lora, load_adapters, save_adapters

            model = apply_lora(_base(), LoRAConfig(rank=2, alpha=4))
            model.reset_classifier(3)
            model.pretrained_cfg = model.pretrained_cfg.replace(num_classes=3, label_names=("c0", "c1", "c2"))
            torch.manual_seed(1)
            with torch.no_grad():  # adapters that change the outputs (lora_B starts at zero)
                for name, p in model.named_parameters():
                    if "lora_" in name or name.startswith("head."):
                        p.copy_(torch.randn_like(p))
            save_adapters(model, self.folder)
            adapted = load_adapters(_base(), self.folder)
            save_file({k: v.contiguous() for k, v in adapted.state_dict().items()}, str(self.ref))
        return self.folder

    def case(self, name: str, damage: Callable[[Path], Any], **spec: Any) -> Make:
        def make() -> dict[str, Any]:
            folder = self.root / "cases" / name
            shutil.copytree(self.ensure(), folder)
            damage(folder)
            return {"path": str(folder), "ref": str(self.ref), "marker": str(folder / "PWNED"), **spec}
        return make


def _config(edit: Callable[[dict[str, Any]], Any]) -> Callable[[Path], None]:
    def damage(folder: Path) -> None:
        meta = json.loads((folder / CONFIG).read_text())
        edit(meta)
        (folder / CONFIG).write_text(json.dumps(meta))
    return damage


def _tensors(edit: Callable[[dict[str, torch.Tensor]], Any]) -> Callable[[Path], None]:
    def damage(folder: Path) -> None:
        state = load_file(folder / WEIGHTS)
        edit(state)
        save_file(state, str(folder / WEIGHTS))  # a plain file: no vitkit checksums
    return damage


def _pickle(folder: Path) -> None:
    torch.save({"blocks.0.attn.qkv.lora_A.weight": _Exploit(str(folder / "PWNED"))}, folder / WEIGHTS)


def _first_lora(state: dict[str, torch.Tensor]) -> str:
    return next(k for k in sorted(state) if k.endswith("lora_B.weight"))


def _set_tensor(how: str) -> Callable[[dict[str, torch.Tensor]], None]:
    def edit(state: dict[str, torch.Tensor]) -> None:
        key = _first_lora(state)
        if how in ("nan", "inf"):
            state[key][0, 0] = float(how)
        elif how == "int":
            state[key] = state[key].long()
        elif how == "shape":
            state[key] = torch.zeros(3, 3)
        elif how == "missing":
            del state[key]
        elif how == "extra":
            state["blocks.9.attn.qkv.lora_A.weight"] = torch.zeros(2, 64)
        elif how == "bool":
            state[key] = state[key] > 0
    return edit


def cases(root: Path, rng: random.Random) -> list[Case]:
    saved = _Saved(root)
    refused: dict[str, Callable[[Path], Any]] = {
        "config-missing": lambda f: (f / CONFIG).unlink(),
        "weights-missing": lambda f: (f / WEIGHTS).unlink(),
        "config-a-folder": replace_file(CONFIG, "folder"),
        "weights-a-folder": replace_file(WEIGHTS, "folder"),
        "weights-a-pickle-with-a-payload": _pickle,
        "config-deep": replace_file(CONFIG, "text", "[" * 100_000 + "]" * 100_000),
        "config-not-json": replace_file(CONFIG, "text", b"\xff{"),
        "config-wrong-format": _config(lambda m: m.update(format="peft")),
        "config-other-architecture": _config(lambda m: m.update(base_architecture_hash="0" * 16)),
        "lora-a-string": _config(lambda m: m.update(lora="x")),
        "lora-rank-string": _config(lambda m: m["lora"].update(rank="8")),
        "lora-rank-huge": _config(lambda m: m["lora"].update(rank=10**12)),
        "lora-targets-number": _config(lambda m: m["lora"].update(targets=5)),
        "lora-targets-nested": _config(lambda m: m["lora"].update(targets=[[1]])),
        "lora-unknown-field": _config(lambda m: m["lora"].update({"1": 2})),
        "head-classes-string": _config(lambda m: m.update(num_classes="7")),
        "head-classes-negative": _config(lambda m: m.update(num_classes=-1)),
        "head-classes-huge": _config(lambda m: m.update(num_classes=10**12)),
        "head-names-number": _config(lambda m: m["pretrained_cfg"].update(label_names=5)),
        "head-pretrained-cfg-string": _config(lambda m: m.update(pretrained_cfg="x")),
        **{f"tensor-{how}": _tensors(_set_tensor(how)) for how in ("nan", "inf", "int", "bool", "shape", "missing",
                                                                  "extra")},
    }
    out = [Case(f"adapters/{name}", CATEGORY, "adapters", "error", saved.case(name, damage))
           for name, damage in refused.items()]
    isolated = {"config-fifo": replace_file(CONFIG, "fifo"), "weights-fifo": replace_file(WEIGHTS, "fifo"),
                "config-dev-zero": replace_file(CONFIG, "link", "/dev/zero"),
                "weights-dev-zero": replace_file(WEIGHTS, "link", "/dev/zero")}
    out += [Case(f"adapters/{name}", CATEGORY, "adapters", "error", saved.case(name, damage), isolate=True)
            for name, damage in isolated.items()]
    out.append(Case("adapters/pristine", CATEGORY, "adapters", "ok", saved.case("pristine", lambda f: None)))
    # names that do not fit the head are not used (predictions name the classes by index): the tensors load
    out.append(Case("adapters/head-names-too-few", CATEGORY, "adapters", "ok",
                    saved.case("names-too-few", _config(lambda m: m["pretrained_cfg"].update(label_names=["a"])))))
    return out + _mutations(saved, rng)


def _mutations(saved: _Saved, rng: random.Random) -> list[Case]:
    """Seeded truncations and byte flips of the weights (vitkit writes them with checksums) and every config
    field replaced by hostile values."""
    out = []
    for i in range(40):
        how = "truncate" if i % 4 == 0 else "flip"

        def damage(folder: Path, how: str = how, seed: int = i) -> None:
            path = folder / WEIGHTS
            data = bytearray(path.read_bytes())
            at = random.Random(seed).randrange(len(data))
            if how == "truncate":
                del data[at:]
            else:
                data[at] ^= random.Random(seed + 1).randrange(1, 256)
            path.write_bytes(bytes(data))
        out.append(Case(f"adapters/weights-{how}-{i}", CATEGORY, "adapters", "either",
                        saved.case(f"mut-{i}", damage), bulk=True))
    for key in ("format", "lora", "base_model", "base_architecture_hash", "num_classes", "pretrained_cfg"):
        for j, value in enumerate(HOSTILE_VALUES):
            out.append(Case(f"adapters/{CONFIG}:{key}={j}", CATEGORY, "adapters", "either",
                            saved.case(f"field-{key}-{j}", _config(lambda m, k=key, v=value: m.update({k: v}))),
                            bulk=True))
    rng.shuffle(out)
    return out
