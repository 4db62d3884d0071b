"""Reading images from disk the way the real world stores them.

``load_image`` returns an RGB (or L) ``PIL.Image`` whatever the file holds: EXIF-rotated JPEGs,
grayscale, palette images with transparency, RGBA, CMYK, 16-bit PNG/TIFF. A file that cannot be used
(missing, empty, not an image, truncated, a decompression bomb) raises ``ImageError`` naming the file.
"""

from __future__ import annotations

import io
import logging
import os
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..checks import limits_from_env
from ..errors import DataError, Hint, ImageError

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm",
                              ".pgm", ".pbm", ".pnm", ".jfif", ".ico"})

# Pillow's own default (~89.5 MPix, a 9459x9459 image); larger images are refused before decoding.
MAX_PIXELS = 89_478_485
IMAGE_LIMITS_ENV = "VITKIT_IMAGE_LIMITS"


@dataclass
class ImageLimits:
    """The bound every use of vitkit reads image files with (predict, features, training data, the server):
    ``vitkit.data.images.LIMITS.max_pixels = N``, or ``VITKIT_IMAGE_LIMITS="max_pixels=N"``."""

    max_pixels: int = MAX_PIXELS


LIMITS = limits_from_env(ImageLimits(), IMAGE_LIMITS_ENV)


class _Limit(Enum):
    LIMIT = "LIMITS"


#: ``load_image``'s default bound: the one in ``LIMITS`` when the image is read
LIMIT = _Limit.LIMIT

# what to do about an image beyond the limit: in Python, a bound of load_image (whose image every use takes) or
# LIMITS; on the command line, the environment variable
RAISE_PIXELS = Hint(" raise the limit (load_image(path, max_pixels=N) and pass the image, or "
                    "vitkit.data.images.LIMITS.max_pixels = N for every image).",
                    cli=f" raise the limit (set {IMAGE_LIMITS_ENV}=max_pixels=N).")
LIMIT_HINTS = (RAISE_PIXELS,)

PathLike = str | os.PathLike

# 16-bit modes Pillow uses for one-channel images; their values span 0..65535
_UINT16_MODES = ("I;16", "I;16B", "I;16L", "I;16N")


def _open(path: Path, max_pixels: int | None, max_aspect_ratio: float | None = None) -> Image.Image:
    """Open and fully decode ``path``, turning every failure into an ``ImageError`` that names it."""
    if not path.exists():
        raise ImageError(f"Image {str(path)!r} does not exist. Check the path.")
    if path.is_dir():
        raise ImageError(f"{str(path)!r} is a folder, expected an image file.")
    if not path.is_file():
        raise ImageError(f"{str(path)!r} is a device, FIFO or socket, expected an image file.")
    if path.stat().st_size == 0:
        raise ImageError(f"Image {str(path)!r} is empty (0 bytes). Re-download or remove the file.")
    return _decode(path, str(path), max_pixels, max_aspect_ratio)


def _decode(source: Path | BinaryIO, name: str, max_pixels: int | None,
            max_aspect_ratio: float | None) -> Image.Image:
    """Fully decode ``source`` (a file or a binary stream called ``name`` in messages), every failure an
    ``ImageError`` that names it."""
    path = name  # the messages below name the image by this
    max_pixels = LIMITS.max_pixels if max_pixels is LIMIT else max_pixels
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(source)
            width, height = img.size
            if max_pixels is not None and width * height > max_pixels:
                img.close()
                raise ImageError(
                    f"Image {str(path)!r} is {width}x{height} = {width * height:,} pixels, more than the limit of "
                    f"{max_pixels:,} (a possible decompression bomb). Downscale it first, or if you trust the "
                    f"file,{RAISE_PIXELS}", hints=(RAISE_PIXELS,))
            if max_aspect_ratio is not None and max(width, height) > max_aspect_ratio * max(min(width, height), 1):
                img.close()
                raise ImageError(
                    f"Image {str(path)!r} is {width}x{height}, an aspect ratio beyond the limit of "
                    f"{max_aspect_ratio:g}:1 (a limit the caller asked for). "
                    "Crop it closer to square first, or raise the limit (max_aspect_ratio=).")
            img.load()
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError(f"Image {str(path)!r} is too large to decode safely ({exc}). Downscale it first, or "
                         f"if you trust the file,{RAISE_PIXELS}", hints=(RAISE_PIXELS,)) from None
    except UnidentifiedImageError:
        raise ImageError(f"{str(path)!r} is not an image Pillow can read (unknown or corrupt format). "
                         f"Expected JPEG, PNG, WebP, TIFF, BMP or GIF; remove or re-save the file.") from None
    except (OSError, SyntaxError, ValueError) as exc:
        # Pillow reports truncated data as OSError("image file is truncated ...") and broken headers
        # as SyntaxError or ValueError
        raise ImageError(f"Image {str(path)!r} cannot be decoded ({exc}); the file is probably truncated or "
                         f"corrupt. Re-download or re-save it.") from None
    return img


def _from_high_bit_depth(img: Image.Image) -> Image.Image:
    """16-bit and 32-bit one-channel images to 8-bit 'L', scaling instead of clipping at 255."""
    arr = np.asarray(img)
    if img.mode in _UINT16_MODES:
        top = 65535.0
    elif img.mode == "F":
        top = 1.0 if arr.size and float(arr.max()) <= 1.0 else 255.0
    else:  # 'I': 32-bit ints, most often a 16-bit PNG; only scale when values exceed 8 bits
        peak = float(arr.max()) if arr.size else 0.0
        top = 255.0 if peak <= 255 else (65535.0 if peak <= 65535 else peak)
    scaled = np.clip(np.rint(arr.astype(np.float64) * (255.0 / top)), 0, 255).astype(np.uint8)
    return Image.fromarray(scaled, mode="L")


def _flatten_alpha(img: Image.Image, background: tuple[int, int, int]) -> Image.Image:
    """Composite an image with transparency onto a solid background (transparent pixels often hold junk)."""
    rgba = img.convert("RGBA")
    base = Image.new("RGBA", rgba.size, background + (255,))
    return Image.alpha_composite(base, rgba).convert("RGB")


def to_mode(img: Image.Image, mode: str = "RGB", *, background: tuple[int, int, int] = (255, 255, 255)) -> Image.Image:
    """Convert any Pillow image to 8-bit ``mode`` ('RGB' or 'L'), handling alpha, palettes and 16-bit data."""
    if mode not in ("RGB", "L"):
        raise ImageError(f"Image mode {mode!r} is not supported: expected 'RGB' or 'L'.")
    if img.mode in _UINT16_MODES or img.mode in ("I", "F"):
        img = _from_high_bit_depth(img)
    has_alpha = img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (img.mode == "P" and "transparency" in img.info)
    if has_alpha:
        img = _flatten_alpha(img, background)
    return img if img.mode == mode else img.convert(mode)


def load_image(path: PathLike, *, mode: str = "RGB", max_pixels: int | None | _Limit = LIMIT,
               exif_transpose: bool = True, max_aspect_ratio: float | None = None) -> Image.Image:
    """Read an image file as an 8-bit ``mode`` ('RGB' or 'L') Pillow image, upright per its EXIF tag.

    Transparent pixels are composited onto white. Raises ``ImageError`` naming the file when it is
    missing, empty, not an image, truncated, larger than ``max_pixels`` or longer than ``max_aspect_ratio``
    times its width (None: no limit; ``max_pixels`` by default that of ``LIMITS``). ``path`` must be a regular
    file (a FIFO would block forever).
    """
    path = Path(path)
    return _upright(_open(path, max_pixels, max_aspect_ratio), str(path), mode, exif_transpose)


def decode_image(data: bytes, *, name: str = "the uploaded image", mode: str = "RGB",
                 max_pixels: int | None | _Limit = LIMIT, exif_transpose: bool = True,
                 max_aspect_ratio: float | None = None) -> Image.Image:
    """``load_image`` for the bytes of an image file (an upload): the same checks, with ``name`` in messages."""
    if not data:
        raise ImageError(f"Image {name!r} is empty (0 bytes). Send the bytes of a JPEG, PNG or WebP file.")
    img = _decode(io.BytesIO(data), name, max_pixels, max_aspect_ratio)
    return _upright(img, name, mode, exif_transpose)


def _upright(img: Image.Image, name: str, mode: str, exif_transpose: bool) -> Image.Image:
    try:
        if exif_transpose:
            img = ImageOps.exif_transpose(img)
        return to_mode(img, mode)
    except (OSError, ValueError) as exc:
        raise ImageError(f"Image {name!r} was read but cannot be converted to {mode} ({exc}). "
                         f"Re-save it as an 8-bit RGB JPEG or PNG.") from None


def is_image_file(path: PathLike) -> bool:
    """True when ``path`` has an image file extension (case-insensitive)."""
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def list_images(paths_or_dirs: PathLike | Iterable[PathLike], *, recursive: bool = True,
                allow_empty: bool = False) -> list[Path]:
    """Image files named directly or found in folders (recursively, sorted, hidden files skipped).

    A file named directly is kept whatever its extension (reading it reports any problem); a path that
    does not exist raises ``DataError``, as does a list that yields no image at all (unless ``allow_empty``).
    """
    if isinstance(paths_or_dirs, (str, os.PathLike)):
        paths_or_dirs = [paths_or_dirs]
    paths_or_dirs = list(paths_or_dirs)
    found: list[Path] = []
    for item in paths_or_dirs:
        p = Path(item)
        if p.is_dir():
            pattern = "**/*" if recursive else "*"
            inside = sorted(f for f in p.glob(pattern) if f.is_file() and is_image_file(f)
                            and not any(part.startswith(".") for part in f.relative_to(p).parts))
            if not inside:
                logger.warning("no image files in folder %s", p)
            found.extend(inside)
        elif p.exists():
            found.append(p)
        else:
            raise DataError(f"Input {str(p)!r} does not exist. Pass image files or folders of images.")
    if not found and not allow_empty:
        raise DataError(f"No image files found in {', '.join(map(str, paths_or_dirs))}. Expected files with "
                        f"one of the extensions {', '.join(sorted(IMAGE_EXTENSIONS))}.")
    return found


def expand_inputs(items: Any) -> list[Any]:
    """The inputs of a use (predict, features, attention) as a flat list, in order: paths to image files as
    ``str``, folders replaced by the image files in them (``list_images``), anything else (a PIL image, an
    array, a tensor) kept as it is. A folder without images (even one named like an image, ``x.png/``) is
    skipped with a warning; ``DataError`` only when no input is left at all or a path does not exist."""
    if isinstance(items, (str, os.PathLike)) or not isinstance(items, (list, tuple)):
        items = [items]
    out: list[Any] = []
    paths: list[Any] = []
    for item in items:
        if isinstance(item, (str, os.PathLike)):
            paths.append(item)
            if Path(item).is_dir():
                out.extend(str(p) for p in list_images(item, allow_empty=True))
            else:
                out.extend(str(p) for p in list_images(item))
        else:
            out.append(item)
    if not out and paths:
        list_images(paths)  # raises its "No image files found in ..." naming every input
    return out
