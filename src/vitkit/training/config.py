"""TrainConfig: every setting of a fine-tuning run, validated, with data-dependent defaults as data."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Any

from ..config import reject_unknown_fields
from ..errors import ConfigError, Hint, keyword
from .options import validate_options

TRAIN_PRECISIONS = ("fp32", "bf16", "fp16")
DISTILL_MODES = ("hard", "soft")
# the TrainConfig fields that describe the data beyond a folder (`vitkit eval` takes them too)
DATA_SETTINGS = ("labels", "val_labels", "hf_dataset", "image_column", "label_column", "multi_label", "threshold")
FREEZE_RE = re.compile(r"^(none|backbone|blocks:(\d+))$")

# Settings left as None take these values: the digits preset trains a small ViT from scratch on
# 8x8 digits (no flips: a mirrored digit is another symbol; mild crops: the digit fills the frame) on one
# thread (a model this small gains ~1.3x from a second core, and loses 3x when another process shares
# the cores); the folder preset fine-tunes a model on photos: ViT-S/16 at its own 224 pixels (the size of
# its published weights), not the 32-pixel digits model, which sees a photo as a smudge.
DIGITS_DEFAULTS: dict[str, Any] = dict(
    model="vit_digits", epochs=70, batch_size=32, lr=2e-3, warmup_epochs=2.0, aug="none", hflip=0.0,
    crop_scale=(0.8, 1.0), crop_ratio=(0.8, 1.25), layer_decay=1.0, out="runs/digits", export_samples=2, threads=1)
FOLDER_MODEL = "vit_small_patch16_224"
FOLDER_DEFAULTS: dict[str, Any] = dict(
    model=FOLDER_MODEL, epochs=10, batch_size=64, lr=5e-4, warmup_epochs=1.0, aug="trivial", hflip=0.5,
    crop_scale=(0.08, 1.0), crop_ratio=(3 / 4, 4 / 3), layer_decay=None, out="runs/train", export_samples=0,
    threads=None)

@dataclass
class TrainConfig:
    """A fine-tuning run. ``None`` fields take the preset of the data (digits or an image folder).

    ``batch_size`` is the global batch of one optimizer step, across processes and accumulation steps,
    so a run gives the same updates on one device or many.
    """

    data: str | None = None
    out: str | None = None
    model: str | None = None
    weights: str | None = None
    model_overrides: dict[str, Any] = dataclasses.field(default_factory=dict)
    img_size: int | None = None  # input size (square); None: the model's own
    overwrite: bool = False  # replace a run already in ``out`` (otherwise refused, unless resuming)
    val_fraction: float = 0.2
    epochs: int | None = None
    batch_size: int | None = None
    eval_batch_size: int = 128
    accum_steps: int = 1
    lr: float | None = None
    min_lr: float = 1e-6
    weight_decay: float = 0.05
    warmup_epochs: float | None = None
    layer_decay: float | None = None
    label_smoothing: float = 0.1
    clip_grad: float | None = 1.0
    freeze: str = "none"
    precision: str = "fp32"
    aug: str | None = None
    magnitude: int = 9
    hflip: float | None = None
    crop_scale: tuple[float, float] | None = None
    crop_ratio: tuple[float, float] | None = None
    mixup: float = 0.0
    cutmix: float = 0.0
    seed: int = 0
    deterministic: bool = False
    workers: int | None = None
    threads: int | None = None  # torch CPU threads (digits: 1; folders: torch's default, one per core)
    device: str | None = None
    resume: str | None = None
    save_every_steps: int = 0
    export_samples: int | None = None
    grad_checkpointing: bool = False
    compile: bool = False  # torch.compile the model for the training step (evaluation stays eager)
    plots: bool = True
    max_steps: int | None = None  # stop after this many optimizer steps (the schedule still spans all epochs)
    teacher: str | None = None  # a model to distil from (registry name with teacher_weights, folder, checkpoint)
    teacher_weights: str | None = None
    distill: str = "hard"  # DeiT's hard (teacher's argmax) or soft (KL at distill_tau) distillation
    distill_alpha: float = 0.5  # weight of the distillation term (1 - alpha: the labels)
    distill_tau: float = 1.0
    ema: float | None = None  # decay of an exponential moving average of the weights (None: off), e.g. 0.999
    log_every: int = 20  # optimizer steps between reads of the loss on the host (progress bar, non-finite check)
    # --- LoRA, data sources, multi-label, tracking, strategy: validated by training/options.py ---
    lora_rank: int = 0  # > 0: train LoRA adapters of this rank (+ the head) instead of the weights (training/peft.py)
    lora_alpha: float = 16.0
    lora_dropout: float = 0.0
    lora_targets: tuple[str, ...] = ("qkv",)  # among qkv, proj, fc1, fc2
    labels: str | None = None  # a CSV/JSONL label file instead of ``data`` (training/sources.py)
    val_labels: str | None = None  # its validation list (else ``val_fraction`` of ``labels`` is held out)
    hf_dataset: str | None = None  # a Hugging Face dataset folder (save_to_disk) instead of ``data``
    image_column: str | None = None  # its image and label columns (default: found by their feature types)
    label_column: str | None = None
    multi_label: bool | None = None  # None: as the data says (a label file's 'labels' column); True: one-element sets
    multilabel_loss: str = "bce"  # multi-label: 'bce' (with label_smoothing) or 'asl' (training/tasks.py)
    threshold: float = 0.5  # multi-label F1: a class is predicted when its sigmoid score exceeds this
    report_to: tuple[str, ...] = ()  # trackers of each epoch's row, e.g. ('tensorboard',) (training/tracking.py)
    strategy: str = "ddp"  # several processes: 'ddp' (replicated) or 'fsdp' (sharded, training/fsdp.py)

    def resolved(self) -> TrainConfig:
        """A copy with every preset field filled in, validated."""
        # a label file or a dataset takes the folder preset, as a folder does
        digits = self.data in (None, "digits") and not (self.labels or self.hf_dataset)
        preset = DIGITS_DEFAULTS if digits else FOLDER_DEFAULTS
        changes = {k: v for k, v in preset.items() if getattr(self, k) is None and v is not None}
        if self.layer_decay is None and "layer_decay" not in changes:
            changes["layer_decay"] = 0.75 if self.weights else 1.0  # fine-tuning pretrained weights: LLRD
        out = dataclasses.replace(self, **changes)
        out.validate()
        return out

    def validate(self) -> None:
        """Raise ConfigError naming the first setting that is not allowed."""
        positive = dict(epochs=self.epochs, batch_size=self.batch_size, accum_steps=self.accum_steps,
                        eval_batch_size=self.eval_batch_size, threads=self.threads, log_every=self.log_every,
                        img_size=self.img_size)
        for name, value in positive.items():
            if value is not None and (not isinstance(value, int) or value < 1):
                _fail(name, value, "a positive integer")
        if self.workers is not None and (not isinstance(self.workers, int) or self.workers < 0):
            _fail("workers", self.workers, "0 (load in the main process) or more")
        if self.lr is not None and not self.lr > 0:
            _fail("lr", self.lr, "a learning rate > 0")
        if not self.min_lr >= 0:
            _fail("min_lr", self.min_lr, "a learning rate >= 0 (the end of the cosine)")
        if not self.weight_decay >= 0:
            _fail("weight_decay", self.weight_decay, "a decay >= 0 (0: none)")
        if self.warmup_epochs is not None and not self.warmup_epochs >= 0:
            _fail("warmup_epochs", self.warmup_epochs, "0 (no warmup) or more epochs")
        if self.max_steps is not None and (not isinstance(self.max_steps, int) or self.max_steps < 1):
            _fail("max_steps", self.max_steps, "a positive step count (leave it out to train every epoch)")
        if self.export_samples is not None and (not isinstance(self.export_samples, int) or self.export_samples < 0):
            _fail("export_samples", self.export_samples, "0 (none) or a number of images per class")
        if self.batch_size is not None and self.batch_size % self.accum_steps:
            _fail("batch_size", self.batch_size, f"a multiple of accum_steps={self.accum_steps}")
        if self.layer_decay is not None and not 0 < self.layer_decay <= 1:
            _fail("layer_decay", self.layer_decay, "a factor in (0, 1] (1: no layer-wise decay)")
        if not 0 <= self.label_smoothing < 1:
            _fail("label_smoothing", self.label_smoothing, "a value in [0, 1)")
        if self.clip_grad is not None and not self.clip_grad > 0:
            _fail("clip_grad", self.clip_grad, "None or a norm > 0")
        if self.precision not in TRAIN_PRECISIONS:
            _fail("precision", self.precision, f"one of {', '.join(TRAIN_PRECISIONS)}")
        if self.ema is not None and not 0 < self.ema < 1:
            _fail("ema", self.ema, "an EMA decay in (0, 1), e.g. 0.999 (leave it out for no EMA)")
        if self.distill not in DISTILL_MODES:
            _fail("distill", self.distill, f"one of {', '.join(DISTILL_MODES)}")
        if not 0 <= self.distill_alpha <= 1:
            _fail("distill_alpha", self.distill_alpha, "a weight in [0, 1]")
        if not self.distill_tau > 0:
            _fail("distill_tau", self.distill_tau, "a temperature > 0")
        if self.teacher_weights is not None and self.teacher is None:
            _fail("teacher_weights", self.teacher_weights, f"a {keyword('teacher')} to load them into (or drop them)",
                  keyword("teacher"))
        if self.save_every_steps < 0:
            _fail("save_every_steps", self.save_every_steps, "0 (each epoch only) or a step count")
        parse_freeze(self.freeze)
        validate_options(self)  # LoRA, sources, multi-label, tracking, strategy

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        for key in ("crop_scale", "crop_ratio"):
            if data[key] is not None:
                data[key] = list(data[key])
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        reject_unknown_fields(cls, data, "training setting(s)")
        data = dict(data)
        for key in ("crop_scale", "crop_ratio"):
            if data.get(key) is not None:
                data[key] = tuple(data[key])
        return cls(**data)


def _fail(name: str, value: Any, expected: str, *hints: Hint) -> None:
    raise ConfigError(f"Training setting {name}={value!r} is not allowed: expected {expected}.", hints=hints)


def parse_freeze(spec: str) -> int | None:
    """'none' -> None (train all), 'backbone' -> 0 blocks, 'blocks:N' -> the last N blocks train."""
    match = FREEZE_RE.match(str(spec).strip())
    if not match:
        freeze = keyword("freeze", spec)
        raise ConfigError(f"{freeze} is not understood: expected 'none' (train everything), 'backbone' (train only "
                          f"the head: linear probing) or 'blocks:N' (the last N blocks and the head).", hints=(freeze,))
    if match.group(1) == "none":
        return None
    return 0 if match.group(1) == "backbone" else int(match.group(2))
