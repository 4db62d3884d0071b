"""Image loading and evaluation transforms (no torchvision)."""

from __future__ import annotations

from .images import IMAGE_EXTENSIONS, MAX_PIXELS, is_image_file, list_images, load_image, to_mode
from .transforms import center_crop, denormalize, normalize, resize, resize_keep_ratio, to_tensor

__all__ = [
    "IMAGE_EXTENSIONS", "MAX_PIXELS", "center_crop", "denormalize", "is_image_file", "list_images", "load_image",
    "normalize", "resize", "resize_keep_ratio", "to_mode", "to_tensor",
]
