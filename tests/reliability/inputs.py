"""Corpus cases for the other things users hand vitkit: image files, JSON configs, command lines."""

from __future__ import annotations

import io
import json
import os
import random
import stat
import struct
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from corpus import HOSTILE_VALUES, TINY, Bases, Case
from PIL import Image

Make = Callable[[], dict[str, Any]]


# ---------------------------------------------------------------------- images
def _image_bytes(kind: str) -> tuple[str, bytes]:
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 255, (30, 40, 3), dtype=np.uint8))
    buf = io.BytesIO()
    if kind == "png":
        rgb.save(buf, "PNG")
    elif kind == "jpeg":
        rgb.save(buf, "JPEG", quality=90)
    elif kind == "gif":
        rgb.convert("P").save(buf, "GIF", transparency=0)
    elif kind == "png16":
        Image.fromarray(rng.integers(0, 65535, (30, 40), dtype=np.uint16)).save(buf, "PNG")
    elif kind == "cmyk":
        rgb.convert("CMYK").save(buf, "JPEG")
    elif kind == "bmp":
        rgb.save(buf, "BMP")
    elif kind == "webp":
        rgb.save(buf, "WEBP")
    elif kind == "tiff":
        rgb.save(buf, "TIFF")
    suffix = {"png16": "png", "cmyk": "jpg", "jpeg": "jpg"}.get(kind, kind)
    return suffix, buf.getvalue()


IMAGE_KINDS = ("png", "jpeg", "gif", "png16", "cmyk", "bmp", "webp", "tiff")


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` with almost no pixel data (a decompression bomb)."""
    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 100)) + \
        chunk(b"IEND", b"")


def _strip(width: int, height: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), (10, 200, 30)).save(buf, "PNG")
    return buf.getvalue()


def image_cases(root: Path, rng: random.Random) -> Iterator[Case]:
    for kind in IMAGE_KINDS:
        suffix, data = _image_bytes(kind)
        yield Case(f"image/{kind}/pristine", f"images:{kind}", "image", "ok", _write(root, f"{kind}.{suffix}", data))
        plan = [("truncate", o) for o in (0, 1, 8, 16, 33, len(data) // 2, len(data) - 1)]
        plan += [("truncate", rng.randrange(len(data))) for _ in range(20)]
        plan += [("flip", rng.randrange(len(data))) for _ in range(45)]
        for i, (how, at) in enumerate(plan):
            blob = bytearray(data)
            if how == "truncate":
                del blob[at:]
            else:
                blob[at] ^= rng.randrange(1, 256)
            yield Case(f"image/{kind}/{how}-{at}-{i}", f"images:{kind}", "image", "either",
                       _write(root, f"{kind}-{how}-{i}.{suffix}", bytes(blob)), bulk=True)
    specials = {"empty.png": b"", "text.jpg": b"hello, not an image\n", "bomb.png": _png_header_only(100_000, 100_000),
                "wide-bomb.png": _png_header_only(2**31 - 1, 1), "zero-size.png": _png_header_only(0, 0)}
    for name, blob in specials.items():
        yield Case(f"image/special/{name}", "images:special", "image", "error", _write(root, name, blob))
    for name, (w, h) in {"strip-1x20000.png": (20000, 1), "strip-20000x1.png": (1, 20000),
                         "strip-2x60000.png": (60000, 2), "pixel-1x1.png": (1, 1)}.items():
        # read and processed in bounded memory: a thin image is resized only where its centre crop falls
        yield Case(f"image/special/{name}", "images:special", "image", "ok", _write(root, name, _strip(w, h)))
    yield Case("image/special/folder.png", "images:special", "image", "error", _folder(root, "folder.png"))


def _write(root: Path, name: str, data: bytes) -> Make:
    def make() -> dict[str, Any]:
        path = root / "images" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return {"path": str(path)}
    return make


def _folder(root: Path, name: str) -> Make:
    def make() -> dict[str, Any]:
        (root / "images" / name).mkdir(parents=True, exist_ok=True)
        return {"path": str(root / "images" / name)}
    return make


# ---------------------------------------------------------------------- ViTConfig JSON
CONFIG_FIELDS = ("img_size", "patch_size", "in_chans", "num_classes", "embed_dim", "depth", "num_heads", "mlp_ratio",
                 "qkv_bias", "qk_scale", "representation_size", "drop_rate", "drop_path_rate", "norm_layer",
                 "norm_eps", "act_layer", "global_pool", "class_token", "reg_tokens", "init_values", "fc_norm",
                 "patch_bias", "distilled", "no_embed_class")
EXTRA_VALUES: list[Any] = [10**6, 10**9, 2**63, -(10**9), float("1e-300"), "gelu", "token", [224, 224], [16, 0]]


def config_cases() -> Iterator[Case]:
    for name in CONFIG_FIELDS:
        for j, value in enumerate(HOSTILE_VALUES + EXTRA_VALUES):
            text = json.dumps({**TINY, name: value})
            yield Case(f"config/{name}={j}", "configs", "config", "either", lambda t=text: {"json": t}, bulk=True)
    for label, text in {"list": "[]", "unknown-field": json.dumps({**TINY, "depht": 2})}.items():
        yield Case(f"config/{label}", "configs", "config", "error", lambda t=text: {"json": t})


# ---------------------------------------------------------------------- command lines
def cli_cases(bases: Bases, root: Path) -> Iterator[Case]:
    model = str(bases.root / "vitkit")
    img = root / "images" / "cli.png"
    out_dir = root / "cli-out"

    def make(argv: list[str]) -> Make:
        def build() -> dict[str, Any]:
            img.parent.mkdir(parents=True, exist_ok=True)
            if not img.exists():
                Image.new("RGB", (20, 20), (1, 2, 3)).save(img)
            out_dir.mkdir(parents=True, exist_ok=True)
            corrupt_run = root / "run-corrupt"
            corrupt_run.mkdir(exist_ok=True)
            (corrupt_run / "report.json").write_text('{"model": ')
            null = root / "null-device"  # a private /dev/null: a regression must not replace the real one
            if not null.exists():
                os.mknod(null, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
            return {"argv": [a.format(model=model, img=img, out=out_dir, run=corrupt_run, null=null) for a in argv]}
        return build

    bad = {
        "predict-batch-0": ["predict", "{img}", "--model", "{model}", "--batch-size", "0"],
        "predict-batch-neg": ["predict", "{img}", "--model", "{model}", "--batch-size", "-3"],
        "predict-topk-0": ["predict", "{img}", "--model", "{model}", "--top-k", "0"],
        "predict-topk-neg": ["predict", "{img}", "--model", "{model}", "--top-k", "-1"],
        "predict-device-bogus": ["predict", "{img}", "--model", "{model}", "--device", "bogus"],
        "predict-device-cuda": ["predict", "{img}", "--model", "{model}", "--device", "cuda"],
        "predict-device-cuda7": ["predict", "{img}", "--model", "{model}", "--device", "cuda:7"],
        "predict-unknown-model": ["predict", "{img}", "--model", "vit_nonexistent_model"],
        "predict-missing-image": ["predict", "/nonexistent.png", "--model", "{model}"],
        "predict-labels-missing": ["predict", "{img}", "--model", "{model}", "--labels", "/nonexistent.txt"],
        "predict-weights-corrupt": ["predict", "{img}", "--model", "vit_digits", "--weights", "/etc/hostname"],
        "features-batch-0": ["features", "{img}", "--model", "{model}", "--out", "{out}/f.npy", "--batch-size", "0"],
        "features-workers-neg": ["features", "{img}", "--model", "{model}", "--out", "{out}/f.npy", "--workers", "-1"],
        "features-device-bogus": ["features", "{img}", "--model", "{model}", "--out", "{out}/f2.npy", "--device",
                                  "bogus"],
        "features-out-dir": ["features", "{img}", "--model", "{model}", "--out", "{out}"],
        "features-out-devnull": ["features", "{img}", "--model", "{model}", "--out", "{null}"],
        "features-out-proc": ["features", "{img}", "--model", "{model}", "--out", "/proc/vitkit.npy"],
        "features-bad-suffix": ["features", "{img}", "--model", "{model}", "--out", "{out}/f.txt"],
        "features-rank-bad": ["features", "{img}", "--model", "{model}", "--out", "{out}/r.npy", "--rank", "3",
                              "--world-size", "2"],
        "features-layers-bad": ["features", "{img}", "--model", "{model}", "--out", "{out}/l.npy", "--layers", "99"],
        "features-merge-missing": ["features", "--out", "{out}/nothing.npy", "--merge"],
        "attention-out-txt": ["attention", "{img}", "--model", "{model}", "--out", "{out}/a.txt"],
        "attention-out-dir": ["attention", "{img}", "--model", "{model}", "--out", "{out}"],
        "attention-out-devnull": ["attention", "{img}", "--model", "{model}", "--out", "{null}"],
        "attention-discard-bad": ["attention", "{img}", "--model", "{model}", "--out", "{out}/a.png",
                                  "--discard-ratio", "2"],
        "attention-device-bogus": ["attention", "{img}", "--model", "{model}", "--out", "{out}/b.png", "--device",
                                   "bogus"],
        "inspect-img-huge": ["inspect", "{model}", "--img-size", "1000000"],
        "inspect-img-zero": ["inspect", "{model}", "--img-size", "0"],
        "inspect-img-neg": ["inspect", "{model}", "--img-size", "-16"],
        "inspect-batch-0": ["inspect", "{model}", "--batch-size", "0"],
        "inspect-unknown": ["inspect", "vit_no_such_model"],
        "weights-missing": ["weights", "/nonexistent.safetensors"],
        "weights-devzero": ["weights", "/dev/zero"],
        "weights-text": ["weights", "/etc/hostname"],
        "weights-limit-neg": ["weights", "{model}", "--limit", "-5"],
        "convert-to-devnull": ["convert", "{model}", "{null}", "--to", "vitkit"],
        "convert-to-proc": ["convert", "{model}", "/proc/vitkit-out", "--to", "timm"],
        "convert-img-huge": ["convert", "{model}", "{out}/c", "--to", "vitkit", "--img-size", "1000000"],
        "convert-classes-huge": ["convert", "{model}", "{out}/c2", "--to", "vitkit", "--num-classes", "1000000000"],
        "convert-classes-neg": ["convert", "{model}", "{out}/c3", "--to", "vitkit", "--num-classes", "-2"],
        "export-img-huge": ["export", "{model}", "--out", "{out}/m.onnx", "--img-size", "1000000"],
        "export-out-dir": ["export", "{model}", "--out", "{out}"],
        "export-out-devnull": ["export", "{model}", "--out", "{null}"],
        "eval-corrupt-run": ["eval", "--run", "{run}"],
        "eval-missing-run": ["eval", "--run", "/nonexistent-run"],
        "eval-batch-0": ["eval", "--run", "{run}", "--batch-size", "0"],
        "train-batch-0": ["train", "digits", "--out", "{out}/t", "--batch-size", "0", "--epochs", "1"],
        "train-epochs-neg": ["train", "digits", "--out", "{out}/t2", "--epochs", "-1"],
        "train-lr-neg": ["train", "digits", "--out", "{out}/t3", "--lr", "-1", "--epochs", "1"],
        "train-workers-neg": ["train", "digits", "--out", "{out}/t4", "--workers", "-1", "--epochs", "1"],
        "train-device-bogus": ["train", "digits", "--out", "{out}/t5", "--device", "bogus", "--epochs", "1"],
        "train-set-bad": ["train", "digits", "--out", "{out}/t6", "--set", "depth=abc", "--epochs", "1"],
        "train-set-huge": ["train", "digits", "--out", "{out}/t7", "--set", "depth=1000000", "--epochs", "1"],
        "train-out-devnull": ["train", "digits", "--out", "{null}", "--epochs", "1"],
        "train-data-missing": ["train", "/nonexistent-data", "--out", "{out}/t8", "--epochs", "1"],
        "train-model-json-bad": ["train", "digits", "--out", "{out}/t9", "--model", "/etc/hostname", "--epochs", "1"],
        "train-val-fraction": ["train", "digits", "--out", "{out}/t10", "--val-fraction", "1.5", "--epochs", "1"],
        "unknown-command": ["frobnicate"],
        "bad-int": ["predict", "{img}", "--model", "{model}", "--batch-size", "many"],
    }
    for label, argv in bad.items():  # training commands read their data first (seconds): sampled in the fast run
        yield Case(f"cli/{label}", "cli", "cli", "error", make(argv), bulk=label.startswith(("train", "eval")))
