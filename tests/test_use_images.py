"""Image loading: real-world formats load as upright 8-bit RGB; broken files raise ImageError naming the file."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from vitkit.cli import main
from vitkit.data.images import IMAGE_EXTENSIONS, list_images, load_image
from vitkit.errors import DataError, ImageError


@pytest.fixture()
def chelsea(photos) -> Image.Image:
    return Image.fromarray(photos["chelsea"])  # 451 x 300 (w x h)


# ---------------------------------------------------------------------------------------------- formats
def test_exif_orientation_is_applied(tmp_path, chelsea):
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    path = tmp_path / "rotated.jpg"
    chelsea.save(path, exif=exif.tobytes(), quality=95)
    img = load_image(path)
    assert img.size == (chelsea.height, chelsea.width)
    assert img.mode == "RGB"
    raw = load_image(path, exif_transpose=False)
    assert raw.size == chelsea.size


@pytest.mark.parametrize("mode", ["L", "1", "CMYK", "LA", "I"])
def test_modes_convert_to_rgb(tmp_path, chelsea, mode):
    path = tmp_path / ("img.tif" if mode in ("CMYK", "I") else "img.png")
    chelsea.convert(mode).save(path)
    img = load_image(path)
    assert img.mode == "RGB" and img.size == chelsea.size
    assert np.asarray(img).std() > 10  # real content survived


def test_grayscale_mode_l(tmp_path, chelsea):
    path = tmp_path / "img.jpg"
    chelsea.save(path)
    assert load_image(path, mode="L").mode == "L"
    with pytest.raises(ImageError, match="RGB"):
        load_image(path, mode="HSV")


def test_rgba_transparent_pixels_become_white(tmp_path):
    arr = np.zeros((4, 4, 4), np.uint8)  # black, fully transparent
    arr[0, 0] = (255, 0, 0, 255)  # one opaque red pixel
    path = tmp_path / "alpha.png"
    Image.fromarray(arr, "RGBA").save(path)
    out = np.asarray(load_image(path))
    assert tuple(out[0, 0]) == (255, 0, 0)
    assert tuple(out[3, 3]) == (255, 255, 255)


def test_palette_with_transparency(tmp_path):
    img = Image.new("P", (4, 4), 0)
    img.putpalette([0, 0, 0, 0, 0, 255] + [0] * 762)
    img.putpixel((1, 1), 1)
    path = tmp_path / "pal.png"
    img.save(path, transparency=0)
    out = np.asarray(load_image(path))
    assert tuple(out[1, 1]) == (0, 0, 255)
    assert tuple(out[0, 0]) == (255, 255, 255)  # the transparent index is composited onto white


def test_16bit_png_is_scaled_not_clipped(tmp_path):
    arr = np.array([[0, 32768], [65535, 1000]], dtype=np.uint16)
    path = tmp_path / "deep.png"
    Image.fromarray(arr).save(path)
    out = np.asarray(load_image(path))[..., 0]
    assert out.tolist() == [[0, 128], [255, 4]]


def test_animated_gif_takes_first_frame(tmp_path, chelsea):
    frames = [chelsea.convert("P"), chelsea.rotate(180).convert("P")]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:])
    assert load_image(path).size == chelsea.size


# ---------------------------------------------------------------------------------------------- broken files
def _truncated(tmp_path, chelsea, fmt):
    buf = io.BytesIO()
    chelsea.save(buf, format=fmt)
    path = tmp_path / f"cut.{fmt.lower()}"
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    return path


def _png_header_only(path, width, height):
    """A PNG whose header claims width x height (what a decompression bomb looks like before decoding)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))
    return path


@pytest.mark.parametrize("case,pattern", [
    ("missing", "does not exist"),
    ("empty", "empty"),
    ("text", "not an image"),
    ("folder", "folder"),
    ("truncated_jpeg", "truncated"),
    ("truncated_png", "truncated"),
    ("bomb", "decompression bomb"),
    ("huge_bomb", "too large|decompression bomb"),
])
def test_broken_images_raise_clear_errors(tmp_path, chelsea, case, pattern):
    path = tmp_path / f"{case}.png"
    if case == "empty":
        path.write_bytes(b"")
    elif case == "text":
        path.write_text("hello, not a picture")
    elif case == "folder":
        path.mkdir()
    elif case == "truncated_jpeg":
        path = _truncated(tmp_path, chelsea, "JPEG")
    elif case == "truncated_png":
        path = _truncated(tmp_path, chelsea, "PNG")
    elif case == "bomb":
        _png_header_only(path, 10_000, 10_000)  # 100 MPix: over vitkit's limit, under Pillow's hard limit
    elif case == "huge_bomb":
        _png_header_only(path, 40_000, 40_000)  # 1.6 GPix: Pillow refuses it itself
    with pytest.raises(ImageError, match=pattern) as info:
        load_image(path)
    assert str(path) in str(info.value)


def test_max_pixels_is_adjustable(tmp_path, chelsea):
    path = tmp_path / "img.png"
    chelsea.save(path)
    with pytest.raises(ImageError, match="max_pixels"):
        load_image(path, max_pixels=1000)
    assert load_image(path, max_pixels=None).size == chelsea.size


def test_cli_reports_a_broken_image_in_one_line(tmp_path, capsys):
    path = tmp_path / "broken.jpg"
    path.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    assert main(["predict", str(path), "--model", "vit_digits"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(path) in err and err.startswith("vitkit predict: error:")


# ---------------------------------------------------------------------------------------------- listing
def test_list_images(tmp_path, chelsea):
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / ".hidden").mkdir()
    for name in ("a/1.JPG", "a/b/2.png", "3.webp", ".hidden/4.png"):
        chelsea.save(tmp_path / name)
    (tmp_path / "notes.txt").write_text("x")
    found = list_images([tmp_path])
    assert [p.relative_to(tmp_path).as_posix() for p in found] == ["3.webp", "a/1.JPG", "a/b/2.png"]
    assert list_images(tmp_path / "notes.txt") == [tmp_path / "notes.txt"]  # named directly: kept
    assert ".jpg" in IMAGE_EXTENSIONS
    with pytest.raises(DataError, match="does not exist"):
        list_images([tmp_path / "nope"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="No image files"):
        list_images(tmp_path / "empty")


def test_a_folder_named_like_an_image_is_walked_or_skipped_not_fatal(tmp_path):
    import vitkit
    from vitkit.data.images import expand_inputs

    Image.new("RGB", (40, 30), "red").save(tmp_path / "a.png")
    (tmp_path / "empty.png").mkdir()
    (tmp_path / "full.jpg").mkdir()
    Image.new("RGB", (30, 40), "blue").save(tmp_path / "full.jpg" / "b.png")
    inputs = [str(tmp_path / "a.png"), str(tmp_path / "empty.png"), str(tmp_path / "full.jpg")]
    assert expand_inputs(inputs) == [str(tmp_path / "a.png"), str(tmp_path / "full.jpg" / "b.png")]
    model = vitkit.create_model("vit_digits").eval()
    results = vitkit.predict(inputs, model, top_k=1)
    assert [r.error for r in results] == [None, None] and len(results[1].top_k) == 1
    with pytest.raises(DataError, match="No image files found"):
        expand_inputs([str(tmp_path / "empty.png")])


# ---------------------------------------------------------------------- thin images
def test_resize_and_crop_is_the_plain_path_unless_the_resize_would_be_too_large(monkeypatch):
    from vitkit.data import transforms
    from vitkit.data.transforms import center_crop, resize, resize_and_crop

    rng = np.random.default_rng(0)
    photo = Image.fromarray(rng.integers(0, 256, (375, 500, 3), dtype=np.uint8))
    plain = center_crop(resize(photo, (256, 341), "bicubic"), 224)
    assert np.array_equal(np.asarray(resize_and_crop(photo, (256, 341), 224, interpolation="bicubic")),
                          np.asarray(plain))  # bit for bit: ordinary images are untouched
    pixels = rng.integers(0, 256, (3000, 7, 3), dtype=np.uint8)  # 7x3000: 32 x 13714 when resized
    strip = Image.fromarray(pixels)
    for filt in ("bilinear", "bicubic"):
        full = np.asarray(center_crop(resize(strip, (13714, 32), filt), 32)).astype(float)
        monkeypatch.setattr(transforms, "MAX_PIXELS", 100_000)  # the resize is now 'too large': the crop box path
        boxed = np.asarray(resize_and_crop(strip, (13714, 32), 32, interpolation=filt)).astype(float)
        monkeypatch.undo()
        # the exact maths: the same resize in float32, channel by channel, without 8-bit rounding between passes
        exact = np.clip(np.stack([np.asarray(center_crop(Image.fromarray(pixels[..., c].astype(np.float32)).resize(
            (32, 13714), resample=transforms.resample_filter(filt)), 32)) for c in range(3)], -1), 0, 255)
        # the crop box path is as close to it as resizing everything first (both round to 8 bits between passes)
        assert boxed.shape == full.shape
        assert np.abs(boxed - exact).max() <= np.abs(full - exact).max() + 1.0, filt
        assert abs(np.abs(boxed - exact).mean() - np.abs(full - exact).mean()) < 0.1, filt


def test_a_thin_strip_loads_unless_a_limit_is_asked_for(tmp_path):
    Image.new("RGB", (20000, 1)).save(tmp_path / "strip.png")
    assert load_image(tmp_path / "strip.png").size == (20000, 1)
    with pytest.raises(ImageError, match="aspect ratio.*100:1"):
        load_image(tmp_path / "strip.png", max_aspect_ratio=100)


THIN_JOB = r"""
import json, resource, sys
from pathlib import Path
import vitkit
from vitkit.cli import main
root = Path(sys.argv[1])
images = [str(p) for p in sorted((root / "data").rglob("*.png"))]
model = vitkit.create_model("vit_tiny_patch16_224", num_classes=2)
preds = vitkit.predict(images, model, top_k=1)
feats = vitkit.extract_features(images, model)
code = main(["train", str(root / "data"), "--model", "vit_tiny_patch16_224", "--epochs", "1", "--batch-size", "2",
             "--val-fraction", "0.5", "--out", str(root / "run"), "--export-samples", "0", "--no-plots"])
print(json.dumps({"errors": [p.error for p in preds], "features": list(feats.shape), "train": code,
                  "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def _thin_job(root, sizes) -> dict:
    import json
    import subprocess
    import sys

    rng = np.random.default_rng(0)
    for cls, size in zip(("a", "a", "b", "b"), sizes):
        (root / "data" / cls).mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / "data" / cls / f"{size[0]}x{size[1]}.png")
    out = subprocess.run([sys.executable, "-c", THIN_JOB, str(root)], capture_output=True, text=True, timeout=280)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_thin_strips_are_predicted_and_embedded():
    import vitkit

    model = vitkit.create_model("vit_tiny_patch16_224", num_classes=2, depth=1)
    strips = [Image.new("RGB", (1, 20000), (200, 10, 10)), Image.new("RGB", (20000, 1)), Image.new("RGB", (2, 15000))]
    assert all(p.error is None and p.top_k for p in vitkit.predict(strips, model, top_k=1))
    assert vitkit.extract_features(strips, model).features.shape == (3, 192)


@pytest.mark.slow  # two fresh processes each predict, embed and train an epoch (about 25 s)
@pytest.mark.timeout(600)
def test_thin_strips_are_predicted_embedded_and_trained_on_in_the_memory_of_ordinary_images(tmp_path):
    """A 1x20000 strip resized whole to a 224 input would be 224 x 4,480,000 pixels (3 GB); only its crop is, so
    the same job (predict, features, one epoch of training) on strips peaks within 256 MB of that on ordinary
    photos, run the same way (about 0.5 GB each on an idle machine)."""
    strips = _thin_job(tmp_path / "strips", [(1, 20000), (20000, 1), (2, 15000), (40, 30)])
    photos = _thin_job(tmp_path / "photos", [(300, 200), (200, 300), (256, 256), (40, 30)])
    for result in (strips, photos):
        assert result["errors"] == [None] * 4 and result["features"] == [4, 192] and result["train"] == 0, result
    assert strips["peak_mb"] < photos["peak_mb"] + 256, (strips, photos)
