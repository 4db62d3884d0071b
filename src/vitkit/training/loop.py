"""The fine-tuning loop: one process or many (DDP), resumable, stopping cleanly on a non-finite loss."""

from __future__ import annotations

import contextlib
import gc
import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from ..data.augment import MixupCutmix
from ..data.datasets import DataSplits
from ..data.digits import export_samples
from ..errors import VitkitError
from ..fileio import remove_stale_temps
from . import checkpoint as ckpt
from .config import TrainConfig
from .distributed import Dist, GlobalBatchSampler, ShardBatchSampler
from .extras import summary_extras
from .fsdp import (
    full_model,
    is_sharded,
    load_model_and_optimizer_state,
    model_and_optimizer_state,
    shard_model,
    unsharded,
)
from .metrics import EvalCounts, write_metrics
from .multilabel_task import BEST_METRIC, multilabel_task
from .optim import WarmupCosine, build_optimizer
from .peft import setup_trainable
from .setup import (
    EvalTransform,
    autocast,
    build_model,
    default_workers,
    label_model,
    make_loader,
    sample_indices,
    seed_everything,
    train_transform,
)
from .sources import load_data
from .tracking import open_reporters

logger = logging.getLogger(__name__)


class NonFiniteLossError(VitkitError):
    """The training loss became NaN or infinite."""


@dataclass
class Progress:
    """Where the run is: the next epoch and batch, the optimizer steps done, and this epoch's sums so far."""

    epoch: int = 0
    batch: int = 0
    step: int = 0
    sums: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0, 0.0])  # loss*n, n, skipped, seconds
    history: list[dict[str, Any]] = field(default_factory=list)
    best_top1: float = -1.0
    best_epoch: int = -1

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)  # copies the lists and rows


def training_loss(out: Any, target: torch.Tensor, label_smoothing: float) -> torch.Tensor:
    """Mean loss; a distilled model's two heads both learn the labels (there is no teacher)."""
    outs = out if isinstance(out, tuple) else (out,)
    smoothing = 0.0 if target.ndim == 2 else label_smoothing  # soft targets (mixup) carry their smoothing
    return sum(F.cross_entropy(o.float(), target, label_smoothing=smoothing) for o in outs) / len(outs)


@torch.no_grad()
def evaluate_loader(model: torch.nn.Module, loader: Any, num_classes: int, device: torch.device,
                    dist: Dist | None = None) -> tuple[dict[str, float], torch.Tensor, int]:
    """(metrics, confusion matrix, images skipped) of ``model`` over ``loader``, summed across ranks."""
    was_training = model.training
    model.eval()
    counts = EvalCounts(num_classes, device)
    skipped = 0
    for x, y, n_skipped in loader:
        skipped += n_skipped
        if not len(y):
            continue
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        logits = model(x).float()
        counts.update(logits, y, F.cross_entropy(logits, y, reduction="sum"))
    model.train(was_training)
    if dist is not None:
        dist.all_reduce_sum(counts.totals)
        dist.all_reduce_sum(counts.confusion)
        skipped = int(dist.all_reduce_sum(torch.tensor([skipped], device=device)).item())
    return counts.summary(), counts.confusion.cpu(), skipped


class Trainer:
    """One run of ``TrainConfig``: build everything, resume if asked, train, export, report."""

    def __init__(self, cfg: TrainConfig, dist: Dist, on_epoch: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.cfg, self.dist, self.on_epoch = cfg, dist, on_epoch
        self.out = Path(cfg.out)
        self.device = dist.device
        seed_everything(cfg.seed)
        self.splits: DataSplits = load_data(cfg)  # issue 13: folder, digits, label file or HF dataset
        self.multi = multilabel_task(cfg, self.splits)  # issue 13: None for a single-label run
        if dist.is_main:
            logger.info("data: %s", self.splits.describe())
        self.model = build_model(cfg.model, num_classes=len(self.splits.classes), weights=cfg.weights,
                                 overrides=cfg.model_overrides)
        label_model(self.model, self.splits)
        self.trainable, self.total = setup_trainable(self.model, cfg)  # issue 13: LoRA adapters or --freeze
        self.model.set_grad_checkpointing(cfg.grad_checkpointing)
        self.model.to(self.device)
        shard_model(self.model, cfg, dist)  # issue 13: --strategy fsdp (before the optimizer sees the parameters)
        self.batch_size = self._global_batch()
        self.steps_per_epoch = len(self.splits.train) // self.batch_size
        self.optimizer = build_optimizer(self.model, lr=cfg.lr, weight_decay=cfg.weight_decay,
                                         layer_decay=cfg.layer_decay)
        self.scheduler = WarmupCosine(self.optimizer, base_lr=cfg.lr, total_steps=cfg.epochs * self.steps_per_epoch,
                                      warmup_steps=round(cfg.warmup_epochs * self.steps_per_epoch), min_lr=cfg.min_lr)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=cfg.precision == "fp16")
        self.mix = MixupCutmix(num_classes=len(self.splits.classes), mixup_alpha=cfg.mixup, cutmix_alpha=cfg.cutmix,
                               label_smoothing=cfg.label_smoothing)
        self.workers = cfg.workers if cfg.workers is not None else default_workers(self.splits.train, dist.world_size)
        self.train_tf, self.eval_tf = train_transform(self.model, cfg), EvalTransform(self.model)
        self.progress = Progress()
        self.state_path = self.out / ckpt.STATE_FILE
        self.last_confusion: torch.Tensor | None = None
        self.reporters = open_reporters(cfg, self.out, dist.is_main)  # issue 13: --report-to (rank 0)
        # last: if a step above raises, no reducer is left to outlive the process group (see close)
        self.ddp = (DistributedDataParallel(self.model, device_ids=[self.device.index] if self.device.type == "cuda"
                                            else None) if dist.initialized and not is_sharded(self.model) else None)

    # ------------------------------------------------------------------ set-up helpers
    def _global_batch(self) -> int:
        """The configured global batch, lowered (with a warning) to fit a small training set."""
        unit = self.dist.world_size * self.cfg.accum_steps
        n = len(self.splits.train)
        if self.cfg.batch_size % unit:
            raise VitkitError(f"--batch-size {self.cfg.batch_size} does not split into {self.dist.world_size} "
                              f"process(es) x {self.cfg.accum_steps} accumulation step(s); use a multiple of {unit}.")
        if n < unit:
            raise VitkitError(f"The training split has {n} images, fewer than {unit} (processes x accumulation "
                              f"steps); add images or lower --accum-steps / the process count.")
        if n >= self.cfg.batch_size:
            return self.cfg.batch_size
        lowered = n // unit * unit
        logger.warning("batch size %d is larger than the training split (%d images); using %d",
                       self.cfg.batch_size, n, lowered)
        return lowered

    def close(self) -> None:
        """Free the DDP wrapper; call before the process group is destroyed.

        The wrapper's reducer holds a reference to the group. Freed after ``destroy_process_group`` it is the
        last one, and ``~ProcessGroupGloo`` then joins gloo's worker threads while holding the GIL, which a
        worker still releasing a finished collective's tensors waits for: a deadlock at exit, seen under load.
        """
        self.ddp = None
        self.reporters.close()  # issue 13
        gc.collect()  # DDP sits in reference cycles: free its reducer now, not at some later collection

    @property
    def net(self) -> torch.nn.Module:
        return self.ddp if self.ddp is not None else self.model

    def summary(self) -> dict[str, Any]:
        """What is being trained: the model, its parameter counts, the data and the schedule."""
        return {"model": getattr(self.model, "model_name", self.cfg.model), "params": self.total,
                "trainable_params": self.trainable, "freeze": self.cfg.freeze, **self.splits.describe(),
                "epochs": self.cfg.epochs, "steps_per_epoch": self.steps_per_epoch, "batch_size": self.batch_size,
                "world_size": self.dist.world_size, "device": str(self.device), "out": str(self.out),
                **summary_extras(self)}  # issue 13

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        return {"version": ckpt.STATE_VERSION, **model_and_optimizer_state(self.model, self.optimizer),  # FSDP: full
                "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict(), "rng": ckpt.rng_state(), "progress": self.progress.to_dict(),
                "model_config": self.model.config.to_dict(), "classes": list(self.splits.classes),
                "train_config": self.cfg.to_dict()}

    def save(self) -> None:
        state = self.state_dict() if self.dist.is_main or is_sharded(self.model) else None  # FSDP: all ranks gather
        if self.dist.is_main:
            ckpt.save_state(state, self.state_path)
        self.dist.barrier()

    def resume(self, path: str) -> bool:
        """Load a training state; 'auto' reads ``OUT/checkpoint.pt`` and starts afresh when there is none."""
        target = self.state_path if path == "auto" else Path(path)
        if self.dist.is_main:
            remove_stale_temps(self.out)
        if path == "auto" and not target.is_file():
            logger.info("no checkpoint in %s: starting afresh", self.out)
            return False
        state = ckpt.load_state(target)
        ckpt.check_compatible(state, self.model.config.to_dict(), list(self.splits.classes), str(target))
        load_model_and_optimizer_state(self.model, self.optimizer, state)  # issue 13: FSDP scatters the full state
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        ckpt.set_rng_state(state["rng"])
        p = state["progress"]
        self.progress = Progress(**{**p, "sums": list(p["sums"]), "history": list(p["history"])})
        if self.dist.is_main:
            write_metrics(self.out, self.progress.history)
        logger.info("resumed from %s at epoch %d, batch %d (step %d)", target, p["epoch"], p["batch"], p["step"])
        return True

    # ------------------------------------------------------------------ training
    def _train_step(self, x: torch.Tensor, y: torch.Tensor) -> float:
        """One optimizer step over this rank's share of a global batch (split into accumulation steps)."""
        cfg, step = self.cfg, self.progress.step
        # mixing's own stream, seeded per step (only mixing draws from it)
        gen = torch.Generator().manual_seed(cfg.seed * 7_919 + step * 104_729 + self.dist.rank) \
            if self.mix.enabled else None
        pieces = list(zip(x.chunk(cfg.accum_steps), y.chunk(cfg.accum_steps)))
        total = 0.0
        for i, (mx, my) in enumerate(pieces):
            mx, my = mx.to(self.device, non_blocking=True), my.to(self.device, non_blocking=True)
            mx, target = self.mix(mx, my, gen) if gen is not None else (mx, my)
            sync = self.ddp is None or i == len(pieces) - 1
            with (contextlib.nullcontext() if sync else self.ddp.no_sync()), autocast(self.device, cfg.precision):
                loss = training_loss(self.net(mx), target, cfg.label_smoothing) if self.multi is None else \
                    self.multi.loss(self.net(mx), target)  # issue 13: multi-label
            value = float(loss.detach())
            if self.dist.any_true(not math.isfinite(value)):
                self._diverged(value)
            self.scaler.scale(loss / len(pieces)).backward()
            total += value * len(my)
        if cfg.clip_grad:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.clip_grad)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        return total

    def _diverged(self, value: float) -> None:
        p = self.progress
        kept = f"the last good checkpoint {self.state_path} is intact" if self.state_path.is_file() else \
            "no checkpoint had been written yet"
        raise NonFiniteLossError(
            f"The training loss became {value} at epoch {p.epoch + 1}, step {p.step + 1} (lr "
            f"{self.scheduler.lr_at(p.step):.3g}); {kept}. Lower --lr, keep --clip-grad on or use --precision fp32, "
            f"then continue with --resume.")

    def _train_loader(self) -> Any:
        p = self.progress
        sampler = GlobalBatchSampler(len(self.splits.train), global_batch=self.batch_size, rank=self.dist.rank,
                                     world_size=self.dist.world_size, seed=self.cfg.seed, epoch=p.epoch,
                                     start_batch=p.batch)
        return make_loader(self.splits.train, self.train_tf, sampler, self.workers,
                           pin_memory=self.device.type == "cuda", training=True)

    def train_epoch(self) -> bool:
        """Train the rest of the current epoch; False when ``max_steps`` stopped it early."""
        p, cfg = self.progress, self.cfg
        self.net.train()
        bar = tqdm(self._train_loader(), desc=f"epoch {p.epoch + 1}/{cfg.epochs}", leave=False, unit="batch",
                   disable=None if self.dist.is_main else True)
        start = time.perf_counter()
        for x, y, skipped in bar:
            lr = self.scheduler.apply()
            loss_sum = self._train_step(x, y) if len(y) else 0.0
            self.scheduler.step()
            p.step, p.batch = p.step + 1, p.batch + 1
            p.sums = [p.sums[0] + loss_sum, p.sums[1] + len(y), p.sums[2] + skipped, p.sums[3]]
            bar.set_postfix(loss=f"{loss_sum / max(len(y), 1):.3f}", lr=f"{lr:.2e}")
            stop = cfg.max_steps is not None and p.step >= cfg.max_steps
            # a periodic save on the epoch's last step is left to end_epoch, which saves anyway
            periodic = cfg.save_every_steps and p.step % cfg.save_every_steps == 0 and p.batch < self.steps_per_epoch
            if stop or periodic:
                p.sums[3] += time.perf_counter() - start
                start = time.perf_counter()
                self.save()
            if stop:
                bar.close()
                return False
        bar.close()
        p.sums[3] += time.perf_counter() - start
        return True

    def end_epoch(self) -> dict[str, Any]:
        """Validate, log the epoch's row, export best/last and save the training state."""
        p = self.progress
        sampler = ShardBatchSampler(len(self.splits.val), batch_size=self.cfg.eval_batch_size, rank=self.dist.rank,
                                    world_size=self.dist.world_size)
        loader = make_loader(self.splits.val, self.eval_tf, sampler, self.workers,
                             pin_memory=self.device.type == "cuda")
        evaluate = evaluate_loader if self.multi is None else self.multi.evaluate  # issue 13: mAP and F1
        with unsharded(self.model):  # issue 13: FSDP gathers the parameters once for the whole pass
            metrics, self.last_confusion, val_skipped = evaluate(self.model, loader, len(self.splits.classes),
                                                                 self.device, self.dist)
        sums = self.dist.all_reduce_sum(torch.tensor(p.sums[:3], dtype=torch.float64, device=self.device)).tolist()
        row = {"epoch": p.epoch + 1, "step": p.step, "lr": self.scheduler.lr_at(max(p.step - 1, 0)),
               "train_loss": sums[0] / max(sums[1], 1.0), **metrics,
               "images_per_sec": sums[1] / max(p.sums[3], 1e-9), "epoch_time_s": p.sums[3],
               "skipped_images": int(sums[2]) + val_skipped}
        p.history.append(row)
        best_key = "val_top1" if self.multi is None else BEST_METRIC  # issue 13: best_top1 holds mAP then
        improved = metrics[best_key] > p.best_top1
        if improved:
            p.best_top1, p.best_epoch = metrics[best_key], p.epoch + 1
        p.epoch, p.batch, p.sums = p.epoch + 1, 0, [0.0, 0.0, 0.0, 0.0]
        export = full_model(self.model)  # issue 13: FSDP gathers a plain model on rank 0 (every rank takes part)
        if self.dist.is_main:
            write_metrics(self.out, p.history)
            self.reporters.log(row)  # issue 13: the same row to TensorBoard & co
            if improved:
                ckpt.export_model(export, self.out / "best")
            ckpt.export_model(export, self.out / "last")
        self.save()
        if self.on_epoch is not None and self.dist.is_main:
            self.on_epoch(row)
        return row

    def export_samples(self) -> list[Path]:
        """Write a few held-out images as ``OUT/samples/<class>_<i>.png`` (to try ``vitkit predict`` on)."""
        if not self.cfg.export_samples or not self.dist.is_main or self.multi is not None:  # named by one class
            return []
        val = self.splits.val
        picked = sample_indices(val.labels, self.cfg.export_samples)
        loaded = [(val.load(i), val.labels[i]) for i in picked]
        loaded = [(img, label) for img, label in loaded if img is not None]
        return export_samples([img for img, _ in loaded], [label for _, label in loaded], self.out / "samples",
                              classes=self.splits.classes)
