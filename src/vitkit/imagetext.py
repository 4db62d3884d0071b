"""Two-tower image-text models (SigLIP, SigLIP 2, CLIP): an image tower, a text tower, a learned scale and bias.

The image tower is an ordinary ``VisionTransformer`` with no classifier (``num_classes=0``; CLIP's image
projection is its ``embed_proj``); the text tower is a ``TextTransformer``. Embeddings are unit length;
``logits`` are ``exp(logit_scale) * cos + logit_bias``; SigLIP scores each pair with a sigmoid, CLIP
takes a softmax over the texts.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .config import ViTConfig
from .errors import ConfigError
from .model import VisionTransformer
from .text import TextConfig, TextTransformer

SCORINGS = ("sigmoid", "softmax")


class ImageTextModel(nn.Module):
    """Image and text towers with ``logit_scale`` (a log) and ``logit_bias``.

    ``encode_image(pixels or images)`` and ``encode_text(texts or ids)`` give unit-length embeddings
    (B, D); ``logits(images, texts)`` the (images, texts) scores; ``scoring``: 'sigmoid' (SigLIP) or
    'softmax' (CLIP), how ``probabilities`` turns them into probabilities. Strings are tokenized by
    ``tokenizer`` (read from the checkpoint with its rules) and images preprocessed by the image tower's
    ``pretrained_cfg``.
    """

    def __init__(self, *, vision: ViTConfig, text: TextConfig, scoring: str = "sigmoid") -> None:
        super().__init__()
        if scoring not in SCORINGS:
            raise ConfigError(f"scoring={scoring!r} is not allowed: expected one of {', '.join(SCORINGS)}.")
        if vision.num_classes or vision.num_features != text.embed_dim:
            raise ConfigError(f"The image tower must have no classifier and embeddings as wide as the text "
                              f"tower's ({text.embed_dim}); got num_classes={vision.num_classes}, "
                              f"width {vision.num_features}.")
        self.scoring = scoring
        self.visual = VisionTransformer(vision)
        self.text = TextTransformer(text)
        self.logit_scale = nn.Parameter(torch.tensor(2.302585093))  # log(10), as SigLIP's initialisation
        self.logit_bias = nn.Parameter(torch.tensor(-10.0 if scoring == "sigmoid" else 0.0))
        self.tokenizer: Any = None  # a vitkit.tokenizer.TextTokenizer, set by the loader
        self.image_processor: Any = None  # an ImageProcessor or PatchProcessor, set by the loader

    @property
    def text_config(self) -> TextConfig:
        return self.text.config

    @property
    def vision_config(self) -> ViTConfig:
        return self.visual.config

    def _device(self) -> torch.device:
        return self.logit_scale.device

    def tokenize(self, texts: str | Sequence[str]) -> torch.Tensor:
        """Token ids (B, context_length) by the model's own tokenizer and text rules."""
        if self.tokenizer is None:
            raise ConfigError("This model has no tokenizer (it was built from a config, not loaded): pass token "
                              "ids to encode_text, or load the model from a folder with its tokenizer file.")
        return self.tokenizer(texts)

    def encode_text(self, texts: str | Sequence[str] | torch.Tensor, *, normalize: bool = True) -> torch.Tensor:
        """Text embeddings (B, D) of strings (tokenized by the model's rules) or token ids (B, L)."""
        ids = texts if isinstance(texts, torch.Tensor) else self.tokenize(texts)
        x = self.text(ids.to(self._device()))
        return F.normalize(x, dim=-1) if normalize else x

    def encode_image(self, images: Any, *, normalize: bool = True) -> torch.Tensor:
        """Image embeddings (B, D) of pixels (B, C, H, W), of patch sequences (a ``vitkit.patches.PatchBatch``),
        or of image files / PIL images (preprocessed as the image tower's pretrained_cfg says: at each image's
        own aspect ratio for a NaFlex tower)."""
        if not isinstance(images, torch.Tensor) and not hasattr(images, "grids"):  # a PatchBatch as it is
            images = self._preprocess(images)
        x = self.visual(images.to(self._device(), self.logit_scale.dtype))
        return F.normalize(x, dim=-1) if normalize else x

    def _preprocess(self, images: Any) -> torch.Tensor:
        preprocess = self.image_processor
        if preprocess is None:
            raise ConfigError("encode_image takes pixels (B, C, H, W) here: this model has no image preprocessing "
                              "attached. Use vitkit.zero_shot, or preprocess with vitkit.ImageProcessor.")
        items = images if isinstance(images, (list, tuple)) else [images]
        return preprocess.collate([preprocess.preprocess_one(item) for item in items])  # pixels or a PatchBatch

    def similarities(self, image_embeds: torch.Tensor, text_embeds: torch.Tensor) -> torch.Tensor:
        """Logits (images, texts) of unit-length embeddings: exp(logit_scale) * cosine + logit_bias."""
        return image_embeds @ text_embeds.t() * self.logit_scale.exp() + self.logit_bias

    def logits(self, images: Any, texts: str | Sequence[str] | torch.Tensor) -> torch.Tensor:
        return self.similarities(self.encode_image(images), self.encode_text(texts))

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """Sigmoid of each pair (SigLIP) or softmax over the texts (CLIP) of logits (images, texts)."""
        return logits.sigmoid() if self.scoring == "sigmoid" else logits.softmax(dim=-1)

    def forward(self, pixels: Any, ids: torch.Tensor) -> torch.Tensor:
        """Logits (images, texts) of pixels (B, C, H, W) or a PatchBatch, and token ids (T, L)."""
        return self.similarities(self.encode_image(pixels), self.encode_text(ids))

    def config_dict(self) -> dict[str, Any]:
        return {"vision": self.visual.config.to_dict(), "text": self.text.config.to_dict(), "scoring": self.scoring}

