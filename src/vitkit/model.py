"""VisionTransformer: the whole model in one file, built from a ViTConfig."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from .config import PretrainedCfg, ViTConfig, nearest_multiple
from .errors import ConfigError, ExportError, InputSizeError
from .layers import (
    PREFIX_TOKENS,
    AttentionPoolHead,
    Block,
    BlockSpec,
    PatchEmbed,
    get_act_layer,
    get_norm_layer,
    init_module,
    init_parameter,
)
from .posemb import posemb_at_tokens, posemb_sincos_2d, posemb_sincos_2d_at, resample_posemb, token_positions
from .rope import rope_table

OUTPUT_FORMATS = ("NCHW", "NLC")


@dataclass
class ViTOutput:
    """What ``model(x, output_hidden_states=True)`` or ``output_attentions=True`` returns, as transformers'
    ``ImageClassifierOutput`` does.

    ``logits``: what ``model(x)`` returns. ``hidden_states``: the embeddings and every block's output, each
    (B, prefix + N, D), ``depth + 1`` of them (before the final norm). ``attentions``: every block's attention
    weights, each (B, heads, prefix + N, prefix + N).
    """

    logits: Any
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None


def _config_value(name: str, doc: str) -> property:
    """A read-only attribute that reads ``config.<name>`` (so it can never drift from the config)."""
    return property(lambda self: getattr(self.config, name), doc=doc)


class VisionTransformer(nn.Module):
    """Vision Transformer (Dosovitskiy et al. 2020), with DeiT, SigLIP-MAP and register-token variants.

    ``forward(x)`` maps images (B, in_chans, H, W) to logits (B, num_classes); H and W may differ from
    ``config.img_size`` as long as they are multiples of the patch size (position embeddings are then
    resampled on the fly). A distilled model returns ``(logits, logits_dist)`` in training mode and their
    mean in eval mode.

    What a model knows about itself beyond its architecture is declared here and set by the one builder,
    ``vitkit.weights.build`` (through ``create_model``, ``from_pretrained`` and the uses): ``pretrained_cfg``,
    the preprocessing and class names its weights expect (``None`` for a model built from a bare config:
    its preprocessing is not known); ``model_name``, the registry name or source it was built from; and
    ``load_report``, what loading its weights matched, adapted and initialised (``None`` when nothing was
    loaded).
    """

    pretrained_cfg: PretrainedCfg | None = None
    model_name: str | None = None
    load_report: Any = None  # a vitkit.weights.LoadReport

    def __init__(self, config: ViTConfig | None = None, **kwargs: Any) -> None:
        super().__init__()
        config = config or ViTConfig()
        if kwargs:
            config = config.replace(**kwargs)
        self.config = config
        c = config
        norm_layer = get_norm_layer(c.norm_layer, c.norm_eps)
        act_layer = get_act_layer(c.act_layer)
        self.grad_checkpointing = False

        patch_bias = (not c.pre_norm) if c.patch_bias is None else c.patch_bias
        self.patch_embed = PatchEmbed(patch_size=c.patch_size, in_chans=c.in_chans, embed_dim=c.embed_dim,
                                      bias=patch_bias, norm_layer=norm_layer if c.patch_norm else None)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, c.embed_dim)) if c.class_token else None
        self.dist_token = nn.Parameter(torch.zeros(1, 1, c.embed_dim)) if c.distilled else None
        self.reg_token = nn.Parameter(torch.zeros(1, c.reg_tokens, c.embed_dim)) if c.reg_tokens else None
        embed_len = c.num_patches if c.no_embed_class else c.num_patches + c.num_prefix_tokens
        if c.posemb in ("sincos2d", "none"):  # computed for each input's grid, or none: an empty placeholder
            self.register_buffer("pos_embed", torch.zeros(1, 0, c.embed_dim), persistent=False)
        else:
            self.pos_embed = nn.Parameter(torch.zeros(1, embed_len, c.embed_dim))
        self.pos_drop = nn.Dropout(c.drop_rate)
        self.norm_pre = norm_layer(c.embed_dim) if c.pre_norm else nn.Identity()

        # stochastic depth grows linearly from 0 at the first block to drop_path_rate at the last
        dpr = [c.drop_path_rate * i / max(c.depth - 1, 1) for i in range(c.depth)]
        spec = block_spec(c)
        self.blocks = nn.Sequential(*[
            Block(c.embed_dim, spec=spec, drop_path=dpr[i], norm_layer=norm_layer, act_layer=act_layer)
            for i in range(c.depth)])
        self.norm = norm_layer(c.embed_dim) if c.final_norm and not c.use_fc_norm else nn.Identity()
        self.attn_pool = (AttentionPoolHead(c.embed_dim, num_heads=c.attn_pool_heads or c.num_heads,
                                            mlp_ratio=c.attn_pool_mlp_ratio or c.mlp_ratio, qkv_bias=True,
                                            norm_layer=norm_layer, act_layer=act_layer)
                          if c.global_pool == "map" else None)
        self.fc_norm = norm_layer(c.embed_dim) if c.final_norm and c.use_fc_norm else nn.Identity()
        if c.representation_size:
            self.pre_logits = nn.Sequential(OrderedDict(
                fc=nn.Linear(c.embed_dim, c.representation_size), act=nn.Tanh()))
        else:
            self.pre_logits = nn.Identity()
        width = c.representation_size or c.embed_dim
        self.embed_proj = nn.Linear(width, c.embed_proj, bias=False) if c.embed_proj else nn.Identity()
        self.head_drop = nn.Dropout(c.head_drop_rate)
        self.head = self._new_head(c.num_classes)
        self.head_dist = self._new_head(c.num_classes) if c.distilled else None
        self.init_weights()

    # ------------------------------------------------------------------ config values (read-only)
    embed_dim = _config_value("embed_dim", "Token width.")
    num_classes = _config_value("num_classes", "Classes of the head (0: no head).")
    global_pool = _config_value("global_pool", "Pooling before the head: token, avg, map, none or token_avg.")
    num_prefix_tokens = _config_value("num_prefix_tokens", "Class, distillation and register tokens.")
    num_features = _config_value("num_features", "Width of the pooled feature the head reads.")

    # ------------------------------------------------------------------ set-up
    def _new_head(self, num_classes: int) -> nn.Module:
        return nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    def _fresh_head(self, num_classes: int) -> nn.Module:
        """A newly initialised head on the model's device and dtype."""
        head = self._new_head(num_classes).to(device=self.pos_embed.device, dtype=self.pos_embed.dtype)
        init_module(head)
        return head

    def init_weights(self) -> None:
        """timm's default initialisation (truncated normal, std .02; tiny normal for special tokens)."""
        names = [n for n, _ in self.named_parameters()]
        # position and prefix tokens first and the MAP query last: the order the random draws always had
        first = [n for n in ("pos_embed", *PREFIX_TOKENS) if n in names]
        last = [n for n in names if n == "attn_pool.latent"]
        self.init_parameters(first + [n for n in names if n not in first and n not in last] + last)

    def init_parameters(self, names: list[str]) -> None:
        """Initialise the named parameters as ``init_weights`` does (``layers.init_parameter``), in this order."""
        for name in names:
            owner_name, _, attr = name.rpartition(".")
            owner = self.get_submodule(owner_name)
            init_parameter(owner, attr, getattr(owner, attr), init_values=self.config.init_values)

    def no_weight_decay(self) -> set[str]:
        """Parameters that take no weight decay besides norms and biases."""
        names = {"pos_embed", "cls_token", "dist_token", "reg_token", "attn_pool.latent"}
        return {n for n, _ in self.named_parameters() if n in names}

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute block activations in the backward pass: less memory, ~30% more compute."""
        self.grad_checkpointing = enable

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """Replace the head(s) with fresh ones for ``num_classes`` classes (0: no head, pooled features).

        ``global_pool`` may switch between 'token', 'avg' and 'none'; a MAP head is part of the
        architecture and cannot be added or removed here.
        """
        changes: dict[str, Any] = {"num_classes": num_classes}
        global_pool = "none" if global_pool == "" else global_pool  # timm spells "no pooling" as ''
        if global_pool is not None and global_pool != self.global_pool:
            if {"map", "token_avg"} & {global_pool, self.global_pool} or self.head_dist is not None:
                raise ConfigError(f"reset_classifier cannot switch pooling from {self.global_pool!r} to "
                                  f"{global_pool!r}: build the model with global_pool={global_pool!r} instead.")
            changes["global_pool"] = global_pool
            if self.config.fc_norm is None:  # keep the norm layers built for the old pooling (as timm does)
                changes["fc_norm"] = self.config.use_fc_norm
        self.config = self.config.replace(**changes)
        self.head = self._fresh_head(num_classes)
        if self.head_dist is not None:
            self.head_dist = self._fresh_head(num_classes)

    # ------------------------------------------------------------------ embedding
    def grid_for(self, height: int, width: int) -> tuple[int, int]:
        """The patch grid for an input of ``height`` x ``width`` pixels, or a clear error."""
        ph, pw = self.config.patch_size
        if height % ph or width % pw or height < ph or width < pw:
            raise InputSizeError(
                f"Input size {height}x{width} is not a multiple of the patch size {ph}x{pw}. "
                f"Resize or crop the image to a multiple, e.g. {nearest_multiple(height, ph)}x"
                f"{nearest_multiple(width, pw)} (the model was configured for "
                f"{self.config.img_size[0]}x{self.config.img_size[1]}).")
        return height // ph, width // pw

    def _check_input(self, x: torch.Tensor) -> tuple[int, int]:
        if not x.is_floating_point():  # uint8 pixels: torch's own error names the conv's bias type, not the fix
            raise InputSizeError(
                f"Expected preprocessed images (a float tensor, normalised as the model expects), got a "
                f"{str(x.dtype).removeprefix('torch.')} tensor of shape {tuple(x.shape)}. Preprocess 0-255 pixels "
                f"with vitkit.ImageProcessor.from_model(model)(images), or pass them to vitkit.predict(x, model), "
                f"which does.")
        if x.ndim != 4 or x.shape[1] != self.config.in_chans:
            raise InputSizeError(
                f"Expected images of shape (B, {self.config.in_chans}, H, W), got {tuple(x.shape)}. "
                f"Add a batch dimension with x.unsqueeze(0) or convert the images to "
                f"{self.config.in_chans} channels.")
        return self.grid_for(x.shape[2], x.shape[3])

    def _pos_embed(self, x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """Add position embeddings and prepend prefix tokens. (B, D, h, w) -> (B, prefix + h*w, D)."""
        B = x.shape[0]
        x = x.flatten(2).transpose(1, 2)  # (B, D, h, w) -> (B, h*w, D)
        prefix = [t.expand(B, -1, -1) for t in (self.cls_token, self.dist_token, self.reg_token) if t is not None]
        embedded_prefix = 0 if self.config.no_embed_class else self.num_prefix_tokens
        if self.config.posemb == "none":  # rotary embeddings alone (DINOv3)
            return self.pos_drop(torch.cat(prefix + [x], dim=1))
        if self.config.posemb == "sincos2d":  # big_vision: fixed, for this grid, added to patches only
            pos_embed = posemb_sincos_2d(grid, self.embed_dim, dtype=x.dtype, device=x.device)
        else:
            pos_embed = resample_posemb(self.pos_embed, grid, num_prefix_tokens=embedded_prefix,
                                        old_grid=self.config.grid_size, style=self.config.resample_style)
        if self.config.no_embed_class or self.config.posemb == "sincos2d":
            # position embeddings cover patches only (DeiT-III, big_vision): add, then concatenate
            x = torch.cat(prefix + [x + pos_embed], dim=1)
        else:
            # position embeddings include the prefix tokens (original ViT, DeiT): concatenate, then add
            x = torch.cat(prefix + [x], dim=1) + pos_embed
        return self.pos_drop(x)

    def _embed(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """Images to the first block's input tokens (B, prefix + N, D), with the patch grid (h, w)."""
        grid = self._check_input(x)
        return self.norm_pre(self._pos_embed(self.patch_embed(x), grid)), grid

    def rope_table(self, grid: tuple[int, int], device: torch.device | None = None) -> torch.Tensor | None:
        """The rotary [sin, cos] table (h*w, 2 * head_dim) for a patch grid, or None without rotary embeddings."""
        c = self.config
        if c.rope == "none":
            return None
        return rope_table(grid, c.embed_dim // c.num_heads, form=c.rope, temperature=c.rope_temperature,
                          offset=c.rope_grid_offset, indexing=c.rope_grid_indexing, ref_grid=c.rope_ref_grid,
                          rotate_half=c.rope_rotate_half, device=device)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Images to the token sequence the first block reads: (B, C, H, W) -> (B, prefix + N, D)."""
        return self._embed(x)[0]

    # ------------------------------------------------------------------ forward passes
    def _run_block(self, block: nn.Module, x: torch.Tensor, rope: torch.Tensor | None = None,
                   attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        if self.grad_checkpointing and self.training and not torch.jit.is_scripting():
            return checkpoint(block, x, rope, attn_mask=attn_mask, use_reentrant=False)
        return block(x, rope, attn_mask=attn_mask)

    def _embed_with_rope(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int], torch.Tensor | None]:
        tokens, grid = self._embed(x)
        return tokens, grid, self.rope_table(grid, device=x.device)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """All tokens after the final norm: (B, C, H, W) -> (B, prefix + N, D)."""
        x, _, rope = self._embed_with_rope(x)
        for block in self.blocks:
            x = self._run_block(block, x, rope)
        return self.norm(x)

    def pool(self, x: torch.Tensor, mode: str | None = None, mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B, prefix + N, D) -> (B, D) by ``mode`` (default: the configured ``global_pool``): 'token' the
        class token, 'avg' the mean patch token, 'token_avg' both side by side (B, 2D), 'map' the attention-pool
        head; 'none' keeps all tokens.
        ``mask`` (B, prefix + N) bool marks the real tokens of padded patch sequences (padding is ignored)."""
        mode = self.global_pool if mode is None else mode
        if mode == "map":  # over every token, as timm's attention pool reads them
            return self.attn_pool(x, attn_mask=None if mask is None else mask[:, None, None, :])
        if mode == "token":
            return x[:, 0]
        if mode == "token_avg":  # (B, D) and (B, D) -> (B, 2D), as Dinov2ForImageClassification reads them
            return torch.cat([x[:, 0], self.pool(x, "avg", mask)], dim=-1)
        if mode == "avg":
            patches = x[:, self.num_prefix_tokens:]
            if mask is None:
                return patches.mean(dim=1)
            keep = mask[:, self.num_prefix_tokens:, None].to(patches.dtype)  # (B, N, 1)
            return (patches * keep).sum(dim=1) / keep.sum(dim=1).clamp(min=1)
        return x

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False, mask: torch.Tensor | None = None) -> Any:
        """Pooled features (``pre_logits=True``) or logits from the tokens of ``forward_features`` (or of
        ``forward_patch_features``, with its token ``mask``)."""
        if self.head_dist is not None:
            cls, dist = self.pre_logits(self.head_drop(x[:, 0])), self.pre_logits(self.head_drop(x[:, 1]))
            if pre_logits:
                return (cls + dist) / 2
            cls, dist = self.head(cls), self.head_dist(dist)
            return (cls, dist) if self.training else (cls + dist) / 2
        x = self.fc_norm(self.pool(x, mask=mask))
        x = self.embed_proj(self.pre_logits(self.head_drop(x)))
        if self.config.normalize_features:
            x = F.normalize(x, dim=-1)
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor | None = None, output_hidden_states: bool = False,
                output_attentions: bool = False, pixel_values: torch.Tensor | None = None) -> Any:
        """Logits (B, num_classes); a ``ViTOutput`` with the hidden states and/or attention weights when asked.

        ``model(pixel_values=x)`` (what ``model(**processor(images=..., return_tensors="pt"))`` passes) returns a
        ``ViTOutput`` as transformers' models do, so ``.logits`` reads the logits.
        """
        if pixel_values is not None:
            if x is not None:
                raise InputSizeError("Pass the images once: either model(x) or model(pixel_values=x), not both.")
            return self._forward_with_outputs(pixel_values, output_hidden_states, output_attentions)
        if x is None:
            raise InputSizeError("No images given: call model(x) with x of shape (B, C, H, W), or "
                                 "model(pixel_values=x).")
        if hasattr(x, "patches") and hasattr(x, "mask") and hasattr(x, "grids"):  # a PatchBatch
            return self.forward_patches(x.patches, x.mask, x.grids)
        if output_hidden_states or output_attentions:
            return self._forward_with_outputs(x, output_hidden_states, output_attentions)
        return self.forward_head(self.forward_features(x))

    def _forward_with_outputs(self, x: torch.Tensor, hidden_states: bool, attentions: bool) -> ViTOutput:
        if not (hidden_states or attentions):
            return ViTOutput(logits=self.forward_head(self.forward_features(x)))
        x, _, rope = self._embed_with_rope(x)
        hidden, attns = [x], []
        for block in self.blocks:
            if attentions:  # the explicit attention path, which returns its weights
                x, attn = block(x, rope, return_attn=True)
                attns.append(attn)
            else:
                x = self._run_block(block, x, rope)
            hidden.append(x)
        return ViTOutput(logits=self.forward_head(self.norm(x)), hidden_states=tuple(hidden) if hidden_states else None,
                         attentions=tuple(attns) if attentions else None)

    # ------------------------------------------------------------------ patch sequences (native aspect ratio)
    def _check_patches(self, patches: torch.Tensor, mask: torch.Tensor, grids: torch.Tensor) -> None:
        c = self.config
        width = c.in_chans * c.patch_size[0] * c.patch_size[1]
        if patches.ndim != 3 or patches.shape[-1] != width or c.patch_size[0] != c.patch_size[1]:
            raise InputSizeError(f"Expected patch sequences (B, L, {width}) of {c.patch_size[0]}x{c.patch_size[1]} "
                                 f"patches with {c.in_chans} channels, got {tuple(patches.shape)}; make them with "
                                 f"vitkit.patches.PatchProcessor.from_model(model).")
        B, L = patches.shape[:2]
        if tuple(mask.shape) != (B, L) or mask.dtype != torch.bool or tuple(grids.shape) != (B, 2):
            raise InputSizeError(f"Patch sequences {tuple(patches.shape)} need a bool mask ({B}, {L}) and grids "
                                 f"({B}, 2); got a {mask.dtype} mask {tuple(mask.shape)} and grids "
                                 f"{tuple(grids.shape)}.")
        counts, cells = mask.sum(dim=1), grids.prod(dim=1)
        if bool((grids < 1).any()) or not torch.equal(counts.cpu(), cells.cpu()):
            raise InputSizeError(f"Each image's grid must have as many patches as its mask has True rows: grids "
                                 f"{grids.tolist()}, real rows {counts.tolist()}.")

    def _per_grid(self, grids: torch.Tensor, length: int, make: Any, width: int, device: torch.device,
                  dtype: torch.dtype) -> torch.Tensor:
        """(B, length, width): ``make(grid)`` -> (h*w, width) for each image's grid, zeros where padded (each
        distinct grid computed once)."""
        out = torch.zeros(grids.shape[0], length, width, device=device, dtype=dtype)
        rows: dict[tuple[int, int], list[int]] = {}
        for i, (h, w) in enumerate(grids.tolist()):
            rows.setdefault((h, w), []).append(i)
        for (h, w), index in rows.items():
            out[index, : h * w] = make((h, w)).to(device=device, dtype=dtype)
        return out

    def embed_patches(self, patches: torch.Tensor, mask: torch.Tensor, grids: torch.Tensor
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Padded patch sequences to the first block's input: (tokens (B, prefix + L, D), the token mask
        (B, prefix + L), the rotary tables (B, 1, L, 2 * head_dim) or None).

        The same arithmetic as ``embed`` on an image of each grid: the patch kernel as a linear map, the
        position embeddings resampled per grid with the model's numerics (or sin-cos / rotary tables computed
        per grid), the prefix tokens prepended.
        """
        self._check_patches(patches, mask, grids)
        c, (B, L) = self.config, patches.shape[:2]
        weight = self.patch_embed.proj.weight  # (D, C, p, p) -> (D, p*p*C): the patch order of to_patches
        x = F.linear(patches.to(weight.dtype), weight.permute(0, 2, 3, 1).reshape(weight.shape[0], -1),
                     self.patch_embed.proj.bias)  # (B, L, D)
        x = self.patch_embed.norm(x)
        prefix = [t.expand(B, -1, -1) for t in (self.cls_token, self.dist_token, self.reg_token) if t is not None]
        embedded_prefix = 0 if c.no_embed_class else self.num_prefix_tokens
        # a graph being traced or exported computes each token's terms from the grids it reads at run time;
        # eagerly each distinct grid is resampled once, with torch's own resize
        recording = torch.jit.is_tracing() or torch.compiler.is_exporting()
        rows, cols = token_positions(grids, mask) if recording else (None, None)
        if c.posemb == "sincos2d":
            x = x + (posemb_sincos_2d_at(rows.float(), cols.float(), self.embed_dim).to(x.dtype) if recording else
                     self._per_grid(grids, L, lambda g: posemb_sincos_2d(g, self.embed_dim)[0], self.embed_dim,
                                    x.device, x.dtype))
        elif c.posemb != "none":
            def patch_posemb(grid: tuple[int, int]) -> torch.Tensor:
                return resample_posemb(self.pos_embed, grid, num_prefix_tokens=embedded_prefix, old_grid=c.grid_size,
                                       style=c.resample_style)[0, embedded_prefix:]

            x = x + (posemb_at_tokens(self.pos_embed[:, embedded_prefix:], c.grid_size, grids, rows, cols,
                                      style=c.resample_style).to(x.dtype) if recording else
                     self._per_grid(grids, L, patch_posemb, self.embed_dim, x.device, x.dtype))
            if embedded_prefix:
                prefix = [t + pe for t, pe in zip(prefix, self.pos_embed[:, :embedded_prefix].split(
                    [t.shape[1] for t in prefix], dim=1))]
        tokens = self.norm_pre(self.pos_drop(torch.cat(prefix + [x], dim=1)))
        full_mask = torch.cat([mask.new_ones(B, self.num_prefix_tokens), mask], dim=1)
        rope = None
        if c.rope != "none":
            if recording:
                raise ExportError("Rotary position embeddings of patch sequences are computed per grid in Python; "
                                  "a graph of them cannot be traced yet. Export this model for images "
                                  "(without max_patches): it takes any height and width.")
            head_dim = c.embed_dim // c.num_heads
            rope = self._per_grid(grids, L, lambda g: self.rope_table(g, device=x.device), 2 * head_dim,
                                  x.device, torch.float32)[:, None]  # (B, L, 2hd) -> (B, 1, L, 2hd)
        return tokens, full_mask, rope

    def forward_patch_features(self, patches: torch.Tensor, mask: torch.Tensor, grids: torch.Tensor
                               ) -> tuple[torch.Tensor, torch.Tensor]:
        """All tokens after the final norm, and the token mask: padded patch sequences (B, L, p*p*C) with their
        mask (B, L) and grids (B, 2) -> ((B, prefix + L, D), (B, prefix + L)). Padding never changes a real
        token: every block attends to real tokens only."""
        x, full_mask, rope = self.embed_patches(patches, mask, grids)
        keys = full_mask[:, None, None, :]  # (B, prefix + L) -> (B, 1, 1, prefix + L)
        for block in self.blocks:
            x = self._run_block(block, x, rope, attn_mask=keys)
        return self.norm(x), full_mask

    def forward_patches(self, patches: torch.Tensor, mask: torch.Tensor, grids: torch.Tensor, *,
                        pre_logits: bool = False) -> torch.Tensor:
        """Logits (or pooled features with ``pre_logits``) of images given as padded patch sequences (a
        ``vitkit.patches.PatchBatch``'s patches, mask and grids): each image at its own aspect ratio."""
        x, full_mask = self.forward_patch_features(patches, mask, grids)
        return self.forward_head(x, pre_logits=pre_logits, mask=full_mask)

    def forward_patch_attention(self, patches: torch.Tensor, mask: torch.Tensor, grids: torch.Tensor
                                ) -> list[torch.Tensor]:
        """Attention weights of every block for padded patch sequences, each (B, heads, prefix + L, prefix + L);
        weights on padding are 0."""
        x, full_mask, rope = self.embed_patches(patches, mask, grids)
        maps = []
        for block in self.blocks:
            x, attn = block(x, rope, return_attn=True, attn_mask=full_mask[:, None, None, :])
            maps.append(attn)
        return maps

    # ------------------------------------------------------------------ timm's accessors
    def get_classifier(self) -> nn.Module:
        """The classification head (``nn.Identity`` when the model has none), as timm's models return it."""
        return self.head

    @property
    def default_cfg(self) -> dict[str, Any]:
        """The pretrained cfg as the dict timm's ``model.default_cfg`` is: architecture, tag, input_size,
        mean, std, crop_pct, crop_mode, interpolation, num_classes, hf_hub_id, ..."""
        pcfg = self.pretrained_cfg
        if pcfg is None:  # a model built from a bare config: its own input size
            pcfg = PretrainedCfg(input_size=(self.config.in_chans, *self.config.img_size), label_names=None)
        pcfg = pcfg.replace(num_classes=self.num_classes)
        return {"architecture": self.model_name or pcfg.timm_name, **pcfg.to_dict()}

    def _resolve_indices(self, indices: int | list[int] | tuple[int, ...] | None) -> list[int]:
        depth = len(self.blocks)
        if indices is None:
            return list(range(depth))
        if isinstance(indices, int):
            if not 0 < indices <= depth:
                raise ConfigError(f"indices={indices} asks for the last {indices} blocks; "
                                     f"the model has {depth} (use 1..{depth}).")
            return list(range(depth - indices, depth))
        out = []
        for i in indices:
            if not -depth <= i < depth:
                raise ConfigError(f"Block index {i} is out of range for a model of depth {depth} "
                                     f"(use -{depth}..{depth - 1}).")
            out.append(i % depth)
        return sorted(set(out))

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: int | list[int] | tuple[int, ...] | None = None,
        *,
        norm: bool = False,
        output_fmt: str = "NCHW",
        return_prefix_tokens: bool = False,
        intermediates_only: bool = False,
        stop_early: bool = False,
    ) -> Any:
        """Outputs of chosen blocks, as feature maps (B, D, h, w) or token sequences (B, N, D).

        ``indices``: an int n takes the last n blocks, a list takes those blocks (negative counts from
        the end), None takes all. ``norm`` applies the final norm to each. With ``return_prefix_tokens``
        each entry is ``(patch_features, prefix_tokens)``. Returns ``(final_tokens, intermediates)``
        unless ``intermediates_only``.
        """
        if output_fmt not in OUTPUT_FORMATS:
            raise ConfigError(f"output_fmt={output_fmt!r} is not supported: use one of {OUTPUT_FORMATS}.")
        take = self._resolve_indices(indices)
        x, grid, rope = self._embed_with_rope(x)
        B = x.shape[0]
        last = max(take) if (stop_early or intermediates_only) else len(self.blocks) - 1
        intermediates = []
        for i, block in enumerate(self.blocks[: last + 1]):
            x = self._run_block(block, x, rope)
            if i not in take:
                continue
            y = self.norm(x) if norm else x
            prefix, patches = y[:, : self.num_prefix_tokens], y[:, self.num_prefix_tokens:]
            if output_fmt == "NCHW":
                # (B, h*w, D) -> (B, D, h, w)
                patches = patches.reshape(B, grid[0], grid[1], -1).permute(0, 3, 1, 2).contiguous()
            intermediates.append((patches, prefix) if return_prefix_tokens else patches)
        if intermediates_only:
            return intermediates
        return self.norm(x), intermediates

    def forward_attention(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Attention weights of every block, each (B, heads, N, N), via the explicit attention path."""
        x, _, rope = self._embed_with_rope(x)
        maps = []
        for block in self.blocks:
            x, attn = block(x, rope, return_attn=True)
            maps.append(attn)
        return maps


def pretrained_cfg_of_model(model: Any) -> PretrainedCfg | None:
    """The preprocessing ``model`` declares (``VisionTransformer.pretrained_cfg``, or that of a module standing
    in for one, e.g. an optimised runner); None when it declares none (another library's model included)."""
    cfg = getattr(model, "pretrained_cfg", None)
    return cfg if isinstance(cfg, PretrainedCfg) else None


def name_of(model: Any) -> str:
    """The name a model is reported by: its ``model_name``, else its class name."""
    name = getattr(model, "model_name", None)
    return name if isinstance(name, str) and name else type(model).__name__


def block_spec(c: ViTConfig) -> BlockSpec:
    """The per-block architecture a config describes."""
    return BlockSpec(
        num_heads=c.num_heads, mlp_ratio=c.mlp_ratio, qkv_bias=c.qkv_bias, qk_scale=c.qk_scale, qk_norm=c.qk_norm,
        proj_bias=c.proj_bias, qkv_fused=c.qkv_fused, k_bias=c.k_bias, attn_norm=c.attn_norm,
        mlp_layer=c.mlp_layer, mlp_norm=c.mlp_norm, mlp_align=c.mlp_align,
        mlp_bias=c.mlp_has_bias, drop=c.drop_rate, attn_drop=c.attn_drop_rate,
        init_values=c.init_values, rotate_half=c.rope_rotate_half, num_prefix_tokens=c.num_prefix_tokens)


class FeatureInfo(list):
    """timm's ``feature_info``: one dict per map (num_chs, reduction, module, index), a list that also answers
    ``channels()``, ``reduction()`` and ``module_name()`` (all maps, or the one at ``idx``) as timm's does."""

    def _get(self, key: str, idx: int | Sequence[int] | None) -> Any:
        if idx is None:
            return [f[key] for f in self]
        if isinstance(idx, int):
            return self[idx][key]
        return [self[i][key] for i in idx]

    def channels(self, idx: int | Sequence[int] | None = None) -> Any:
        return self._get("num_chs", idx)

    def reduction(self, idx: int | Sequence[int] | None = None) -> Any:
        return self._get("reduction", idx)

    def module_name(self, idx: int | Sequence[int] | None = None) -> Any:
        return self._get("module", idx)

    def get_dicts(self) -> list[dict[str, Any]]:
        return [dict(f) for f in self]


class FeatureMaps(nn.Module):
    """timm's ``features_only=True`` for a ViT: the outputs of chosen blocks as NCHW maps (B, D, h, w).

    ``create_model(name, features_only=True, out_indices=(2, 5, 11))`` builds one; ``out_indices`` is a list
    of blocks (negative from the end) or n for the last n blocks (default 3, as timm). ``feature_info``
    describes each map (channels, reduction, module) as timm's does.
    """

    def __init__(self, model: VisionTransformer, out_indices: int | Sequence[int] = 3, *, norm: bool = False) -> None:
        super().__init__()
        self.model = model
        self.out_indices = model._resolve_indices(out_indices if isinstance(out_indices, int) else list(out_indices))
        self.norm = norm
        reduction = model.config.patch_size[0]
        self.feature_info = FeatureInfo({"num_chs": model.embed_dim, "reduction": reduction, "module": f"blocks.{i}",
                                         "index": i} for i in self.out_indices)

    def channels(self) -> list[int]:
        return self.feature_info.channels()

    def reduction(self) -> list[int]:
        return self.feature_info.reduction()

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Images (B, C, H, W) -> one map (B, D, H / patch, W / patch) per chosen block."""
        return self.model.forward_intermediates(x, self.out_indices, norm=self.norm, output_fmt="NCHW",
                                                intermediates_only=True)
