"""The fine-tuning loop: one process or many (DDP), resumable, stopping cleanly on a non-finite loss."""

from __future__ import annotations

import contextlib
import gc
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from ..data.augment import MixupCutmix
from ..data.datasets import DataSplits
from ..data.digits import export_samples
from ..errors import ConfigError, DataError, VitkitError, keyword
from ..fileio import remove_stale_temps
from . import checkpoint as ckpt
from .config import TrainConfig
from .distill import distillation_loss, load_teacher
from .distributed import Dist, GlobalBatchSampler, ShardBatchSampler
from .ema import ModelEma
from .fsdp import (
    full_model,
    is_sharded,
    load_model_and_optimizer_state,
    model_and_optimizer_state,
    shard_model,
    unsharded,
)
from .interrupt import StopRequest, StopWhileWaiting, TrainingInterrupted, interruptible
from .metrics import write_metrics
from .optim import WarmupCosine, build_optimizer
from .peft import lora_summary, setup_trainable
from .setup import (
    EvalTransform,
    autocast,
    build_model,
    default_workers,
    label_model,
    make_loader,
    quiet_new_head,
    sample_indices,
    seed_everything,
    train_transform,
)
from .sources import load_data
from .tasks import make_task
from .tracking import open_reporters

logger = logging.getLogger(__name__)


class NonFiniteLossError(VitkitError):
    """The training loss became NaN or infinite."""


def _loss_accumulator(device: torch.device) -> torch.Tensor:
    # float64 where the device has it: a sum over an epoch's steps, identical however often it is read
    return torch.zeros((), dtype=torch.float32 if device.type == "mps" else torch.float64, device=device)


@dataclass
class EpochStats:
    """This rank's sums over the current epoch so far.

    ``loss_sum`` (loss x images) stays a device tensor: adding to it does not wait for the device; it is
    read once per logging interval, before a save and at the end of the epoch.
    """

    loss_sum: torch.Tensor = field(default_factory=lambda: _loss_accumulator(torch.device("cpu")))
    images: int = 0
    skipped: int = 0
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"loss_sum": self.loss_sum.detach().cpu().clone(), "images": self.images, "skipped": self.skipped,
                "seconds": self.seconds}

    @classmethod
    def from_dict(cls, data: dict[str, Any] | list[float], device: torch.device) -> EpochStats:
        if isinstance(data, (list, tuple)):  # older checkpoints: [loss*n, n, skipped, seconds]
            data = {"loss_sum": torch.tensor(float(data[0])), "images": int(data[1]), "skipped": int(data[2]),
                    "seconds": float(data[3])}
        loss = _loss_accumulator(device)
        loss += torch.as_tensor(data["loss_sum"]).to(device, loss.dtype)
        return cls(loss_sum=loss, images=int(data["images"]), skipped=int(data["skipped"]),
                   seconds=float(data["seconds"]))


@dataclass
class Progress:
    """Where the run is: the next epoch and batch, the optimizer steps done, and this epoch's sums so far."""

    epoch: int = 0
    batch: int = 0
    step: int = 0
    stats: EpochStats = field(default_factory=EpochStats)
    history: list[dict[str, Any]] = field(default_factory=list)
    best_score: float = -1.0  # the task's best_metric (top-1, or mAP) of the best epoch
    best_epoch: int = -1
    best_ema_top1: float = -1.0
    best_ema_epoch: int = -1

    def to_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "batch": self.batch, "step": self.step, "stats": self.stats.to_dict(),
                "history": [dict(r) for r in self.history], "best_score": self.best_score,
                "best_epoch": self.best_epoch, "best_ema_top1": self.best_ema_top1,
                "best_ema_epoch": self.best_ema_epoch}

    @classmethod
    def from_dict(cls, data: dict[str, Any], device: torch.device) -> Progress:
        stats = EpochStats.from_dict(data["stats"] if "stats" in data else data["sums"], device)
        best = data["best_score"] if "best_score" in data else data["best_top1"]  # older states: best_top1
        return cls(epoch=int(data["epoch"]), batch=int(data["batch"]), step=int(data["step"]), stats=stats,
                   history=[dict(r) for r in data["history"]], best_score=float(best),
                   best_epoch=int(data["best_epoch"]), best_ema_top1=float(data.get("best_ema_top1", -1.0)),
                   best_ema_epoch=int(data.get("best_ema_epoch", -1)))


class Trainer:
    """One run of ``TrainConfig``: build everything, resume if asked, train, export, report."""

    def __init__(self, cfg: TrainConfig, dist: Dist, on_epoch: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.cfg, self.dist, self.on_epoch = cfg, dist, on_epoch
        self.out = Path(cfg.run.out)
        self.device = dist.device
        seed_everything(cfg.run.seed)
        self.splits: DataSplits = load_data(cfg.source, cfg.run.seed)  # a folder, the digits, a label file, a dataset
        self.task = make_task(cfg, self.splits)  # single- or multi-label: loss, validation, best score
        if dist.is_main:
            logger.info("data: %s", self.splits.describe())
        net, opt, aug, teacher = cfg.network, cfg.optim, cfg.augment, cfg.distillation
        with quiet_new_head(bool(cfg.run.resume)):
            self.model = build_model(net.model, num_classes=len(self.splits.classes), weights=net.weights,
                                     overrides=net.model_overrides, img_size=net.img_size)
        label_model(self.model, self.splits)
        if net.max_patches is not None:  # the exports run each image at its own aspect ratio at this budget
            self.model.pretrained_cfg = self.model.pretrained_cfg.replace(max_num_patches=net.max_patches)
        self.trainable, self.total = setup_trainable(self.model, cfg)  # LoRA adapters or --freeze
        self.model.set_grad_checkpointing(net.grad_checkpointing)
        self.model.to(self.device)
        shard_model(self.model, cfg, dist)  # --strategy fsdp (before the optimizer sees the parameters)
        self.ema = ModelEma(self.model, opt.ema) if opt.ema else None
        self.teacher = load_teacher(teacher.teacher, teacher.teacher_weights, self.model, list(self.splits.classes),
                                    self.device) if teacher.teacher else None
        self.batch_size = self._global_batch()
        self.steps_per_epoch = len(self.splits.train) // self.batch_size
        self.optimizer = build_optimizer(self.model, lr=opt.lr, weight_decay=opt.weight_decay,
                                         layer_decay=opt.layer_decay)
        self.scheduler = WarmupCosine(self.optimizer, base_lr=opt.lr, total_steps=opt.epochs * self.steps_per_epoch,
                                      warmup_steps=round(opt.warmup_epochs * self.steps_per_epoch), min_lr=opt.min_lr)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=opt.precision == "fp16")
        self.mix = MixupCutmix(num_classes=len(self.splits.classes), mixup_alpha=aug.mixup, cutmix_alpha=aug.cutmix,
                               label_smoothing=opt.label_smoothing)
        workers = cfg.source.workers
        self.workers = workers if workers is not None else default_workers(self.splits.train, dist.world_size)
        self.train_tf = train_transform(self.model, cfg.augment, cfg.run.seed, max_patches=net.max_patches)
        self.eval_tf = EvalTransform(self.model, max_patches=net.max_patches)
        self.progress = Progress(stats=EpochStats(loss_sum=_loss_accumulator(self.device)))
        self.checked_step = 0  # the step at which the loss was last seen finite on every rank
        self.stop = StopRequest()  # entered by ``train`` for the length of the training loop
        self.state_path = self.out / ckpt.STATE_FILE
        self.last_confusion: torch.Tensor | None = None
        self.reporters = open_reporters(cfg, self.out, dist.is_main)  # --report-to (rank 0)
        # last: if a step above raises, no reducer is left to outlive the process group (see close)
        self.ddp = (DistributedDataParallel(self.model, device_ids=[self.device.index] if self.device.type == "cuda"
                                            else None) if dist.initialized and not is_sharded(self.model) else None)
        # the training step's forward: compiled on request (the first steps pay the compile; shapes stay static
        # because every training batch has its full size)
        self.step_net: torch.nn.Module = torch.compile(self.net) if net.compile else self.net

    # ------------------------------------------------------------------ set-up helpers
    def _global_batch(self) -> int:
        """The configured global batch, lowered (with a warning) to fit a small training set."""
        batch, accum = self.cfg.optim.batch_size, self.cfg.optim.accum_steps
        unit = self.dist.world_size * accum
        n = len(self.splits.train)
        if batch % unit:
            named = keyword("batch_size", batch)
            raise ConfigError(f"{named} does not split into {self.dist.world_size} process(es) x "
                              f"{accum} accumulation step(s); use a multiple of {unit}.", hints=(named,))
        if n < unit:
            accum_hint = keyword("accum_steps")
            raise DataError(f"The training split has {n} images, fewer than {unit} (processes x accumulation "
                            f"steps); add images or lower {accum_hint} / the process count.", hints=(accum_hint,))
        if n >= batch:
            return batch
        lowered = n // unit * unit
        logger.warning("batch size %d is larger than the training split (%d images); using %d", batch, n, lowered)
        return lowered

    def close(self) -> None:
        """Free the DDP wrapper; call before the process group is destroyed.

        The wrapper's reducer holds a reference to the group. Freed after ``destroy_process_group`` it is the
        last one, and ``~ProcessGroupGloo`` then joins gloo's worker threads while holding the GIL, which a
        worker still releasing a finished collective's tensors waits for: a deadlock at exit, seen under load.
        """
        self.ddp = None
        self.step_net = self.model
        self.reporters.close()
        gc.collect()  # DDP sits in reference cycles: free its reducer now, not at some later collection

    @property
    def net(self) -> torch.nn.Module:
        return self.ddp if self.ddp is not None else self.model

    def summary(self) -> dict[str, Any]:
        """What is being trained: the model, its parameter counts, the data and the schedule."""
        h, w = self.model.config.img_size
        native = {"max_patches": self.cfg.network.max_patches} if self.cfg.network.max_patches else {}
        return {"model": self.model.model_name or self.cfg.network.model, "img_size": f"{h}x{w}", **native,
                "params": self.total, "trainable_params": self.trainable, "freeze": self.cfg.network.freeze,
                **self.splits.describe(),
                "epochs": self.cfg.optim.epochs, "steps_per_epoch": self.steps_per_epoch, "batch_size": self.batch_size,
                "world_size": self.dist.world_size, "device": str(self.device), "out": str(self.out),
                "teacher": None if self.teacher is None else {
                    "model": self.cfg.distillation.teacher, "mode": self.cfg.distillation.mode,
                    "alpha": self.cfg.distillation.alpha,
                    "through": "distillation head" if self.model.head_dist is not None else "logits"},
                **lora_summary(self.model), **self.task.summary(),
                **({"strategy": "fsdp"} if is_sharded(self.model) else {})}

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        return {"version": ckpt.STATE_VERSION, **model_and_optimizer_state(self.model, self.optimizer),  # FSDP: full
                "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict(), "rng": ckpt.rng_state(), "progress": self.progress.to_dict(),
                "model_config": self.model.config.to_dict(), "classes": list(self.splits.classes),
                "train_images": len(self.splits.train), "train_config": self.cfg.to_dict(),
                "ema": self.ema.state_dict() if self.ema is not None else None,
                "pretrained_cfg": self.model.pretrained_cfg.to_dict()}  # so the file alone predicts as best/ does

    def save(self) -> None:
        """Write the training state (rank 0), after checking that no rank's loss went non-finite."""
        self.check_finite()
        state = self.state_dict() if self.dist.is_main or is_sharded(self.model) else None  # FSDP: all ranks gather
        if self.dist.is_main:
            ckpt.save_state(state, self.state_path)
        self.dist.barrier()

    def resume(self, path: str) -> bool:
        """Load a training state; 'auto' reads ``OUT/checkpoint.pt`` (``prepare_out`` checked that there is one)."""
        target = self.state_path if path == "auto" else Path(path)
        if self.dist.is_main:
            remove_stale_temps(self.out)
        state, where = ckpt.load_state(target), str(target)
        self._check_resumable(state, where)
        with ckpt.restoring(where, "progress"):
            progress = Progress.from_dict(state["progress"], self.device)
        self._check_progress(progress, where)
        with ckpt.restoring(where, "model or optimizer"):
            load_model_and_optimizer_state(self.model, self.optimizer, state)  # FSDP scatters the full state
        with ckpt.restoring(where, "scheduler"):
            self.scheduler.load_state_dict(state["scheduler"])
        with ckpt.restoring(where, "scaler"):
            self.scaler.load_state_dict(state["scaler"])
        with ckpt.restoring(where, "rng"):
            ckpt.set_rng_state(state["rng"])
        if self.ema is not None:
            with ckpt.restoring(where, "ema"):
                self.ema.load_state_dict(state.get("ema"))
        self.progress = progress
        self.checked_step = self.progress.step
        if self.dist.is_main:
            write_metrics(self.out, self.progress.history)
        p = self.progress
        logger.info("resumed from %s at epoch %d, batch %d (step %d)", target, p.epoch, p.batch, p.step)
        return True

    def _check_progress(self, p: Progress, path: str) -> None:
        """Counters a run could have reached: within its epochs, steps and an epoch's batches."""
        epochs = self.cfg.optim.epochs
        steps = epochs * self.steps_per_epoch
        if not (0 <= p.epoch <= epochs and 0 <= p.batch <= self.steps_per_epoch
                and 0 <= p.step <= steps and -1 <= p.best_epoch <= p.epoch and len(p.history) == p.epoch):
            raise ckpt.damaged(path, "progress", f"(epoch {p.epoch}, batch {p.batch}, step {p.step}, best epoch "
                                                 f"{p.best_epoch}, {len(p.history)} history rows) does not fit a "
                                                 f"run of {epochs} epochs of {self.steps_per_epoch} steps")

    def _check_resumable(self, state: dict[str, Any], path: str) -> None:
        """Same architecture, classes, training split size and training settings as the checkpoint's run."""
        ckpt.check_compatible(state, self.model.config.to_dict(), list(self.splits.classes), path)
        saved_images, images = state.get("train_images"), len(self.splits.train)
        if saved_images is not None and saved_images != images:
            raise ckpt.CheckpointError(
                f"Checkpoint {path!r} was trained on {saved_images} training images but the data now has {images}, "
                f"which changes the schedule (steps per epoch). Resume on the same data, or use another "
                f"{keyword('out')} folder.", hints=(keyword("out"),))
        defaults = TrainConfig().to_dict()
        ckpt.check_settings(state.get("train_config", {}), self.cfg.to_dict(), defaults, path, str(self.out))

    # ------------------------------------------------------------------ training
    def _train_step(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """One optimizer step over this rank's share of a global batch (split into accumulation steps).

        No host sync: the loss is added to the epoch's device-side sum, which ``check_finite`` reads.
        """
        cfg, step = self.cfg, self.progress.step
        # mixing's own stream, seeded per step (only mixing draws from it)
        gen = torch.Generator().manual_seed(cfg.run.seed * 7_919 + step * 104_729 + self.dist.rank) \
            if self.mix.enabled else None
        pieces = list(zip(x.chunk(cfg.optim.accum_steps), y.chunk(cfg.optim.accum_steps)))
        stats = self.progress.stats
        for i, (mx, my) in enumerate(pieces):
            mx, my = mx.to(self.device, non_blocking=True), my.to(self.device, non_blocking=True)
            mx, target = self.mix(mx, my, gen) if gen is not None else (mx, my)
            sync = self.ddp is None or i == len(pieces) - 1
            with (contextlib.nullcontext() if sync else self.ddp.no_sync()), autocast(self.device, cfg.optim.precision):
                loss = self._loss(self.step_net(mx), mx, target)
            self.scaler.scale(loss / len(pieces)).backward()
            stats.loss_sum += loss.detach().to(stats.loss_sum.dtype) * len(my)
        if cfg.optim.clip_grad:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.optim.clip_grad)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        if self.ema is not None:
            self.ema.update(self.model)

    def _loss(self, out: Any, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The labels' loss, or DeiT's with the teacher scoring the same (augmented, mixed) batch ``x``."""
        cfg = self.cfg
        if self.teacher is None:  # (a multi-label task refuses a teacher)
            return self.task.loss(out, target)
        return distillation_loss(out, target, self.teacher(x), mode=cfg.distillation.mode, alpha=cfg.distillation.alpha,
                                 tau=cfg.distillation.tau, label_smoothing=cfg.optim.label_smoothing)

    def check_finite(self) -> bool:
        """The host sync of a logging interval; returns whether any rank was asked to stop (Ctrl-C).

        Stops every rank together when a loss went non-finite. Called every ``log_every`` steps, before
        each save and at the end of an epoch (so a non-finite loss never reaches a checkpoint); all ranks
        call it at the same steps (it is one collective).
        """
        p = self.progress
        flags = torch.stack([(~torch.isfinite(p.stats.loss_sum)).to(torch.float32),
                             torch.tensor(float(self.stop.requested), device=self.device)])
        bad, stop = (v > 0 for v in self.dist.all_reduce_sum(flags).tolist())
        if bad:
            self._diverged(float(p.stats.loss_sum))
        self.checked_step = p.step
        return stop

    def stop_if_asked(self, *, synced: bool | None = None) -> None:
        """Save and raise ``TrainingInterrupted`` when a stop was asked for (agreed across ranks by ``synced``)."""
        stop = synced if self.dist.initialized else self.stop.requested
        if not stop:
            return
        self.save()
        p = self.progress
        logger.warning("stopped on request at epoch %d, step %d; state saved to %s", p.epoch + 1, p.step,
                       self.state_path)
        raise TrainingInterrupted(checkpoint=self.state_path, epoch=p.epoch, step=p.step)

    def _diverged(self, value: float) -> None:
        p = self.progress
        kept = f"the last good checkpoint {self.state_path} is intact" if self.state_path.is_file() else \
            "no checkpoint had been written yet"
        hints = keyword("lr"), keyword("clip_grad"), keyword("precision", "fp32"), keyword("resume", "auto", typed="")
        raise NonFiniteLossError(
            f"The training loss became {value} in epoch {p.epoch + 1}, between steps {self.checked_step + 1} and "
            f"{p.step} (lr {self.scheduler.lr_at(max(p.step - 1, 0)):.3g}); {kept}. Lower {hints[0]}, keep "
            f"{hints[1]} on or use {hints[2]}, then start again (resuming with {hints[3]} continues with the "
            f"same settings).", hints=hints)

    def _train_loader(self) -> Any:
        p = self.progress
        sampler = GlobalBatchSampler(len(self.splits.train), global_batch=self.batch_size, rank=self.dist.rank,
                                     world_size=self.dist.world_size, seed=self.cfg.run.seed, epoch=p.epoch,
                                     start_batch=p.batch)
        return make_loader(self.splits.train, self.train_tf, sampler, self.workers,
                           pin_memory=self.device.type == "cuda", training=True)

    def train_epoch(self) -> bool:
        """Train the rest of the current epoch; False when ``max_steps`` stopped it early."""
        p, cfg = self.progress, self.cfg
        self.net.train()
        bar = tqdm(self._train_loader(), desc=f"epoch {p.epoch + 1}/{cfg.optim.epochs}", leave=False, unit="batch",
                   disable=None if self.dist.is_main else True)
        start = time.perf_counter()
        try:
            for x, y, skipped in interruptible(bar, self.stop):  # a stop request ends a wait for data at once
                lr = self.scheduler.apply()
                self._train_step(x, y)  # every rank steps: a training batch is never empty (see TransformedImages)
                self.scheduler.step()
                p.step, p.batch = p.step + 1, p.batch + 1
                p.stats.images += len(y)
                p.stats.skipped += skipped
                synced = None
                if p.step % cfg.run.log_every == 0:
                    synced = self.check_finite()
                    bar.set_postfix(loss=f"{float(p.stats.loss_sum) / max(p.stats.images, 1):.3f}", lr=f"{lr:.2e}")
                p.stats.seconds += time.perf_counter() - start
                start = time.perf_counter()
                self.stop_if_asked(synced=synced)
                stop = cfg.optim.max_steps is not None and p.step >= cfg.optim.max_steps
                # a periodic save on the epoch's last step is left to end_epoch, which saves anyway
                periodic = cfg.run.save_every_steps and p.step % cfg.run.save_every_steps == 0 and \
                    p.batch < self.steps_per_epoch
                if stop or periodic:
                    self.save()
                if stop:
                    return False
        except StopWhileWaiting:
            self.stop_while_waiting()
        finally:
            bar.close()
        return True

    def stop_while_waiting(self) -> None:
        """A stop request came while this rank waited for data, at a step boundary: alone, save and raise
        ``TrainingInterrupted``; under DDP (the other ranks may be inside a collective, which a save would
        join) stop without saving, the state saved last being kept."""
        if self.dist.initialized:
            raise KeyboardInterrupt
        self.stop_if_asked()

    def _validate(self, model: torch.nn.Module) -> tuple[dict[str, float], torch.Tensor, int]:
        sampler = ShardBatchSampler(len(self.splits.val), batch_size=self.cfg.optim.eval_batch_size,
                                    rank=self.dist.rank, world_size=self.dist.world_size)
        loader = make_loader(self.splits.val, self.eval_tf, sampler, self.workers,
                             pin_memory=self.device.type == "cuda")
        with unsharded(model):  # FSDP gathers the parameters once for the whole pass
            try:
                return self.task.evaluate(model, interruptible(loader, self.stop), len(self.splits.classes),
                                          self.device, self.dist)
            except StopWhileWaiting:  # after the epoch's last step: its state is saved as a periodic save would
                model.train()
                self.stop_while_waiting()
                raise

    def _train_row(self) -> dict[str, Any]:
        """The epoch's training figures, summed over the ranks (one all-reduce)."""
        p, st = self.progress, self.progress.stats
        counts = torch.tensor([st.images, st.skipped], dtype=torch.float64, device=self.device)
        loss_sum, images, skipped = self.dist.all_reduce_sum(torch.cat([st.loss_sum.double().reshape(1),
                                                                        counts])).tolist()
        return {"epoch": p.epoch + 1, "step": p.step, "lr": self.scheduler.lr_at(max(p.step - 1, 0)),
                "train_loss": loss_sum / max(images, 1.0), "images_per_sec": images / max(st.seconds, 1e-9),
                "epoch_time_s": st.seconds, "skipped_images": int(skipped)}

    def end_epoch(self) -> dict[str, Any]:
        """Validate (the weights, and their EMA), log the epoch's row, export the checkpoints, save the state."""
        p = self.progress
        self.check_finite()
        metrics, self.last_confusion, val_skipped = self._validate(self.model)
        row = self._train_row()
        row = {**row, **metrics, "skipped_images": row["skipped_images"] + val_skipped}
        exports = ["last"]
        best_key = self.task.best_metric
        if metrics[best_key] > p.best_score:
            p.best_score, p.best_epoch = metrics[best_key], p.epoch + 1
            exports.append("best")
        if self.ema is not None:
            ema_metrics, _, _ = self._validate(self.ema.module)
            row.update({f"ema_{k}": v for k, v in ema_metrics.items() if k != "val_images"})
            exports.append("ema")
            if ema_metrics[best_key] > p.best_ema_top1:
                p.best_ema_top1, p.best_ema_epoch = ema_metrics[best_key], p.epoch + 1
                exports.append("best_ema")
        p.history.append(row)
        p.epoch, p.batch, p.stats = p.epoch + 1, 0, EpochStats(loss_sum=_loss_accumulator(self.device))
        export = full_model(self.model)  # FSDP gathers a plain model on rank 0 (every rank takes part)
        if self.dist.is_main:
            write_metrics(self.out, p.history)
            self.reporters.log(row)  # the same row to TensorBoard & co
            for name in exports:
                ckpt.export_model(self.ema.module if "ema" in name else export, self.out / name)
        self.save()
        if self.on_epoch is not None and self.dist.is_main:
            self.on_epoch(row)
        return row

    def export_samples(self) -> list[Path]:
        """Write a few held-out images as ``OUT/samples/<class>_<i>.png`` (to try ``vitkit predict`` on)."""
        if not self.cfg.run.export_samples or not self.dist.is_main or not self.task.one_class_per_image:
            return []
        val = self.splits.val
        picked = sample_indices(val.labels, self.cfg.run.export_samples)
        loaded = [(val.load(i), val.labels[i]) for i in picked]
        loaded = [(img, label) for img, label in loaded if img is not None]
        return export_samples([img for img, _ in loaded], [label for _, label in loaded], self.out / "samples",
                              classes=self.splits.classes)
