"""Text towers of image-text models (SigLIP, SigLIP 2, CLIP), built from vitkit's transformer block.

SigLIP's tower is bidirectional, pools the last token and ends in a linear head; CLIP's is causal, pools the
end-of-text token and ends in a bias-free projection. The text rules (``TextRules``) travel in the config.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from .config import ACT_LAYERS, did_you_mean
from .errors import ConfigError, InputSizeError
from .layers import Block, BlockSpec, get_act_layer, init_module
from .tokenizer import TextRules

# the last position (SigLIP), the first end-of-text token (transformers' CLIP), the largest id (open_clip's CLIP,
# whose end-of-text token is the last of the vocabulary)
POOLS = ("last", "eot", "argmax")


@dataclass
class TextConfig:
    """The architecture of a text tower, and the rules its texts are tokenized by.

    ``width``/``depth``/``num_heads``/``mlp_ratio``: the encoder; ``embed_dim``: the width of the text
    embedding (after the head or projection); ``causal``: CLIP's causal mask; ``pool``: 'last', 'eot' (the
    first position holding ``eot_id``) or 'argmax' (the position of the largest id); ``head_bias``: the
    final layer has a bias (SigLIP's head) or not (CLIP's projection).
    """

    vocab_size: int = 32000
    width: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    embed_dim: int = 768
    act_layer: str = "gelu_tanh"
    norm_eps: float = 1e-6
    causal: bool = False
    pool: str = "last"
    eot_id: int = 1
    head_bias: bool = True
    rules: TextRules = field(default_factory=TextRules)

    def __post_init__(self) -> None:
        if isinstance(self.rules, dict):
            self.rules = TextRules.from_dict(self.rules)
        for name in ("vocab_size", "width", "depth", "num_heads", "embed_dim"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"TextConfig.{name}={value!r} is not allowed: expected a positive integer.")
        if self.width % self.num_heads:
            raise ConfigError(f"TextConfig.num_heads={self.num_heads} is not allowed: expected a divisor of "
                              f"width={self.width}.")
        if self.act_layer not in ACT_LAYERS:
            raise ConfigError(f"TextConfig.act_layer={self.act_layer!r} is not allowed: expected one of "
                              f"{', '.join(ACT_LAYERS)}{did_you_mean(str(self.act_layer), ACT_LAYERS)}.")
        if self.pool not in POOLS:
            raise ConfigError(f"TextConfig.pool={self.pool!r} is not allowed: expected one of {', '.join(POOLS)}.")
        if not 0 <= self.eot_id < self.vocab_size:
            raise ConfigError(f"TextConfig.eot_id={self.eot_id} is not allowed: expected an id below "
                              f"vocab_size={self.vocab_size}.")

    @property
    def context_length(self) -> int:
        return self.rules.context_length

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["rules"] = self.rules.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TextConfig:
        if not isinstance(data, dict):
            raise ConfigError(f"A TextConfig must be a dict of fields, got {type(data).__name__}.")
        unknown = sorted(set(data) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ConfigError(f"TextConfig field(s) {', '.join(unknown)} are not known.")
        return cls(**data)


class TextTransformer(nn.Module):
    """Token ids (B, L) -> text embeddings (B, embed_dim), not normalised."""

    def __init__(self, config: TextConfig) -> None:
        super().__init__()
        self.config = c = config
        norm = nn.LayerNorm
        self.token_embed = nn.Embedding(c.vocab_size, c.width)
        self.pos_embed = nn.Parameter(torch.zeros(1, c.context_length, c.width))
        self.blocks = nn.Sequential(*[
            Block(c.width, spec=BlockSpec(num_heads=c.num_heads, mlp_ratio=c.mlp_ratio, causal=c.causal),
                  drop_path=0.0, norm_layer=lambda d: norm(d, eps=c.norm_eps), act_layer=get_act_layer(c.act_layer))
            for _ in range(c.depth)])
        self.norm = norm(c.width, eps=c.norm_eps)
        self.head = nn.Linear(c.width, c.embed_dim, bias=c.head_bias)
        init_module(self)
        nn.init.normal_(self.token_embed.weight, std=0.02)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        c = self.config
        if ids.ndim != 2 or ids.shape[1] > c.context_length or ids.dtype not in (torch.long, torch.int):
            raise InputSizeError(f"Expected token ids of shape (B, L) with L <= {c.context_length} (integers), "
                                 f"got {tuple(ids.shape)} {ids.dtype}. Tokenize texts with model.tokenizer.")
        L = ids.shape[1]
        x = self.token_embed(ids) + self.pos_embed[:, :L]  # (B, L, width)
        x = self.norm(self.blocks(x))
        if c.pool == "last":
            return self.head(x[:, -1])
        # the first end-of-text token of each row (argmax of the match mask picks the first), or the largest id
        where = (ids == c.eot_id).int().argmax(dim=-1) if c.pool == "eot" else ids.argmax(dim=-1)  # (B,)
        pooled = x[torch.arange(x.shape[0], device=x.device), where]
        return self.head(pooled)
