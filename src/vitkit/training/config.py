"""TrainConfig: every setting of a fine-tuning run, declared once, grouped by concern, each group checking itself.

A setting is one dataclass field of its group (``SourceSettings``, ``NetworkSettings``, ``OptimSettings``,
``AugmentSettings``, ``DistillSettings``, ``LoRASettings``, ``RunSettings``) with its check, its help text
and its flag as field metadata (``setting``); ``vitkit train``'s flags are generated from these fields
(``vitkit.cli.train_flags``), and ``vitkit.train(**settings)`` takes the same names. A setting's *flat name*
(``lr``, ``lora_rank``, ``distill_alpha``) is its keyword, its key in ``report.json`` and, with dashes, its
flag; inside the code it is read from its group (``cfg.optim.lr``, ``cfg.lora.rank``). Settings left as
``None`` that have a preset take the data's (the digits or an image folder), in ``resolved()``.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from ..checks import (
    Checker,
    boolean,
    checked,
    field_problems,
    fraction,
    int_between,
    non_negative,
    number,
    number_between,
    one_of,
    optional_as,
    positive,
    positive_int,
    short,
)
from ..choices import AUGMENT_POLICIES, LORA_TARGETS, MULTILABEL_LOSSES
from ..config import reject_unknown_fields
from ..errors import ConfigError, keyword

TRAIN_PRECISIONS = ("fp32", "bf16", "fp16")
DISTILL_MODES = ("hard", "soft")
STRATEGIES = ("ddp", "fsdp")  # training/fsdp.py
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


# ---------------------------------------------------------------------- declaring a setting
def setting(default: Any = None, check: Checker | None = None, *, help: str = "",  # noqa: A002
            flat: str | None = None, flag: str | None = None, cli: bool = True, factory: Any = None,
            **argparse_options: Any) -> Any:
    """A setting: a dataclass field with its ``check`` (None when the value is fine, else what was expected),
    its ``help``, its ``flat`` name when it differs from the field's, its ``flag`` when it is not
    ``--flat-name``, ``cli=False`` when it has no flag, and argparse options (``metavar``, ``nargs``,
    ``parse`` (the flag's type), ``action``, ``const``, ``to_setting`` (the flag's value -> the setting's))."""
    return checked(default, check, help=help, flag=flag, flat=flat, cli=cli,
                   default_factory=factory if factory is not None else dataclasses.MISSING, **argparse_options)


def flat_name(f: dataclasses.Field) -> str:
    return f.metadata.get("flat") or f.name


def flag_of(f: dataclasses.Field) -> str:
    return f.metadata.get("flag") or "--" + flat_name(f).replace("_", "-")


def fail(name: str, value: Any, expected: str, *hints: Any) -> None:
    """Raise the ConfigError of a setting that is not allowed, named as the caller set it (``name=value`` in
    Python, ``--flag value`` on the command line; ``hints``: other settings ``expected`` names)."""
    typed = None if isinstance(value, str) else ",".join(value) if isinstance(value, tuple) and all(
        isinstance(v, str) for v in value) else short(value)  # as the flag is typed: lists comma-separated
    setting = keyword(name, value, typed=typed)
    raise ConfigError(f"Training setting {setting} is not allowed: expected {expected}.", hints=(setting, *hints))


def _sorted_pair(v: Any) -> str | None:
    ok = isinstance(v, tuple) and len(v) == 2 and all(number(x) is None for x in v) and 0 < v[0] <= v[1]
    return None if ok else "two numbers (MIN, MAX) with 0 < MIN <= MAX"


def _names_of(choices: tuple[str, ...]) -> Checker:
    def check(v: Any) -> str | None:
        ok = isinstance(v, tuple) and bool(v) and all(isinstance(x, str) and x in choices for x in v)
        return None if ok else f"a non-empty list among {', '.join(choices)}"
    return check


def _path(v: Any) -> str | None:
    return None if v is None or (isinstance(v, str) and v and "\0" not in v) else "a path"


def _freeze(v: Any) -> str | None:
    return None if isinstance(v, str) and FREEZE_RE.match(v.strip()) else \
        "'none' (train everything), 'backbone' (train only the head: linear probing) or 'blocks:N'"


def _names(text: str) -> tuple[str, ...]:
    """A comma-separated list (a flag's value) as a tuple."""
    return tuple(t.strip() for t in text.split(",") if t.strip())


class Settings:
    """A group of settings: checks each field's value, then the group's own rules (``rules``)."""

    def validate(self) -> None:
        fields = {f.name: f for f in dataclasses.fields(self)}  # type: ignore[arg-type]
        for name, value, want, _ in field_problems(self):
            fail(flat_name(fields[name]), value, want)
        self.rules()

    def rules(self) -> None:
        """Checks across this group's fields (none by default)."""


# ---------------------------------------------------------------------- the groups
@dataclass
class SourceSettings(Settings):
    """Where the images and labels come from, and how they are split."""

    data: str | None = setting(None, _path, cli=False, help="an image folder (or 'digits', the bundled digits)")
    labels: str | None = setting(None, _path, metavar="FILE", help="CSV (path,label or path,labels with "
                                 "';'-separated classes) or JSONL ({\"path\": ..., \"label(s)\": ...}) label file; "
                                 "paths relative to the file")
    val_labels: str | None = setting(None, _path, metavar="FILE",
                                     help="validation label file (default: --val-fraction of --labels)")
    hf_dataset: str | None = setting(None, _path, metavar="DIR", help="a Hugging Face dataset saved with "
                                     "save_to_disk (its validation split, else --val-fraction of train)")
    image_column: str | None = setting(None, help="the --hf-dataset's image column (default: the one of Image type)")
    label_column: str | None = setting(None, help="the --hf-dataset's label column (default: the ClassLabel one)")
    multi_label: bool | None = setting(None, optional_as(boolean), action="store_const", const=True,
                                       help="sigmoid outputs even on single-label data (one-element label sets); "
                                            "default: as the data says (a label file's 'labels' column)")
    threshold: float = setting(0.5, number_between(0.0, 1.0), parse=float,
                               help="score threshold of the multi-label F1 metrics")
    val_fraction: float = setting(0.2, fraction, parse=float, help="held-out fraction when the folder has no val/")
    workers: int | None = setting(None, optional_as(int_between(0)), parse=int,
                                  help="data loading processes; default depends on the data: 0 for the digits (in "
                                       "memory), else the cores left beside training (at most 8)")

    def rules(self) -> None:
        given = [name for name, value in (("data", self.data), ("labels", self.labels),
                                          ("hf_dataset", self.hf_dataset))
                 if value is not None and not (name == "data" and value == "digits")]
        if len(given) > 1:
            hints = keyword("labels"), keyword("hf_dataset")
            raise ConfigError(f"Give one data source, not {' and '.join(given)}: an image folder (data), a label "
                              f"file ({hints[0]}) or a saved Hugging Face dataset ({hints[1]}).", hints=hints)
        if self.val_labels and not self.labels:
            hints = keyword("val_labels"), keyword("labels")
            raise ConfigError(f"{hints[0]} lists the validation images of a {hints[1]} file; give {hints[1]} too.",
                              hints=hints)
        if (self.image_column or self.label_column) and not self.hf_dataset:
            hints = keyword("image_column"), keyword("label_column"), keyword("hf_dataset")
            raise ConfigError(f"{hints[0]}/{hints[1]} name columns of a {hints[2]}; give {hints[2]} too.",
                              hints=hints)
        if not 0.0 < self.threshold < 1.0:
            fail("threshold", self.threshold, "a score threshold in (0, 1)")
        if not 0.0 < self.val_fraction < 1.0:
            fail("val_fraction", self.val_fraction, "a fraction in (0, 1)")

    @property
    def is_digits(self) -> bool:
        """The bundled digits (no folder, label file or dataset given)."""
        return self.data in (None, "digits") and not (self.labels or self.hf_dataset)


def _overrides(items: list[str]) -> dict[str, Any]:
    """``--set FIELD=VALUE`` pairs (VALUE read as JSON when it parses, else as a string)."""
    import json

    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set {item!r} is not FIELD=VALUE (e.g. --set drop_path_rate=0.1).")
        try:
            out[key.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            out[key.strip()] = raw
    return out


def _mapping(v: Any) -> str | None:
    return None if isinstance(v, dict) and all(isinstance(k, str) for k in v) else "a dict of ViTConfig fields"


@dataclass
class NetworkSettings(Settings):
    """What trains: the model, its weights and size, and which parts of it learn."""

    model: str | None = setting(None, optional_as(lambda v: None if isinstance(v, str) and v else "a model"),
                                help="registry name, saved model folder or checkpoint, or a JSON file of ViTConfig "
                                     "fields")
    weights: str | None = setting(None, _path, help="pretrained weights for a registry --model (any supported "
                                  "checkpoint); default: none (random initialisation)")
    model_overrides: dict[str, Any] = setting(factory=dict, check=_mapping, flag="--set", action="append",
                                              metavar="FIELD=VALUE", to_setting=_overrides,
                                              help="override a ViTConfig field (repeatable)")
    img_size: int | None = setting(None, optional_as(positive_int), parse=int, metavar="N",
                                   help="input size N x N (position embeddings resampled); default: the model's own "
                                        "(vit_digits: 32, *_224: 224)")
    max_patches: int | None = setting(None, optional_as(positive_int), parse=int, metavar="N",
                                      help="train and validate each image at its own aspect ratio, resized to at "
                                           "most N patches (padded patch sequences with a mask; position embeddings "
                                           "resampled per image; the crop's aspect range is relative to the image's); "
                                           "the exports run that way too. Default: square crops at --img-size")
    freeze: str = setting("none", _freeze, help="none | backbone (linear probing) | blocks:N (last N blocks + head)")
    grad_checkpointing: bool = setting(False, boolean, help="recompute activations: less memory, more compute")
    compile: bool = setting(False, boolean, help="torch.compile the model for the training step (the first steps pay "
                                                 "a compile of ~30 s; pays off on long runs; evaluation stays eager)")


@dataclass
class OptimSettings(Settings):
    """The schedule, the optimizer and the loss."""

    epochs: int | None = setting(None, optional_as(positive_int), parse=int, help="passes over the training split")
    batch_size: int | None = setting(None, optional_as(positive_int), parse=int,
                                     help="global batch per optimizer step, over processes and accumulation (the "
                                          "same updates on one device or many)")
    accum_steps: int = setting(1, positive_int, parse=int, help="gradient accumulation steps per optimizer step")
    eval_batch_size: int = setting(128, positive_int, parse=int, help="batch of the validation passes")
    lr: float | None = setting(None, optional_as(positive), parse=float, help="peak learning rate (after warmup)")
    min_lr: float = setting(1e-6, non_negative, parse=float, help="learning rate at the end of the cosine")
    weight_decay: float = setting(0.05, non_negative, parse=float,
                                  help="AdamW decay (never on norms, biases, embeddings, tokens)")
    warmup_epochs: float | None = setting(None, optional_as(non_negative), parse=float,
                                          help="epochs of linear warmup (fractions allowed)")
    layer_decay: float | None = setting(None, optional_as(number_between(1e-12, 1.0)), parse=float,
                                        help="layer-wise lr decay (1: off); default depends on the weights: 0.75 "
                                             "with --weights on an image folder, else 1")
    label_smoothing: float = setting(0.1, number_between(0.0, 0.999999), parse=float,
                                     help="label smoothing of the cross-entropy")
    clip_grad: float | None = setting(1.0, optional_as(positive), parse=float,
                                      to_setting=lambda v: None if v == 0 else v, help="gradient norm clip (0: off)")
    precision: str = setting("fp32", one_of(TRAIN_PRECISIONS), help="autocast precision")
    multilabel_loss: str = setting("bce", one_of(MULTILABEL_LOSSES), flag="--loss",
                                   help="multi-label loss: bce (with --label-smoothing) or asl (asymmetric loss)")
    max_steps: int | None = setting(None, optional_as(positive_int), parse=int,
                                    help="stop after N optimizer steps (the schedule still spans all epochs)")
    ema: float | None = setting(None, optional_as(number_between(1e-12, 1 - 1e-12)), parse=float, metavar="DECAY",
                                help="also keep an exponential moving average of the weights with this decay (e.g. "
                                     "0.999; warm-up min(DECAY, (1+t)/(10+t)) at step t), validated each epoch and "
                                     "saved as OUT/ema and OUT/best_ema; default: off")

    def rules(self) -> None:
        if self.batch_size is not None and self.batch_size % self.accum_steps:
            accum = keyword("accum_steps", self.accum_steps)
            fail("batch_size", self.batch_size, f"a multiple of {accum}", accum)


@dataclass
class AugmentSettings(Settings):
    """The training augmentation (crop, flip, policy, mixing)."""

    aug: str | None = setting(None, optional_as(one_of(AUGMENT_POLICIES)),
                              help="augmentation policy after crop and flip")
    magnitude: int = setting(9, int_between(0, 30), parse=int, help="RandAugment magnitude 0..30")
    hflip: float | None = setting(None, optional_as(number_between(0.0, 1.0)), parse=float,
                                  help="horizontal flip probability")
    crop_scale: tuple[float, float] | None = setting(None, optional_as(_sorted_pair), parse=float, nargs=2,
                                                     metavar=("MIN", "MAX"), to_setting=tuple,
                                                     help="random resized crop area range")
    crop_ratio: tuple[float, float] | None = setting(None, optional_as(_sorted_pair), parse=float, nargs=2,
                                                     metavar=("MIN", "MAX"), to_setting=tuple,
                                                     help="random resized crop aspect-ratio range")
    mixup: float = setting(0.0, non_negative, parse=float, help="mixup alpha (0: off)")
    cutmix: float = setting(0.0, non_negative, parse=float, help="cutmix alpha (0: off)")


@dataclass
class DistillSettings(Settings):
    """A teacher to distil from."""

    teacher: str | None = setting(None, _path, metavar="MODEL",
                                  help="distil from this model (registry name with --teacher-weights, saved model "
                                       "folder or checkpoint; it must predict the data's classes); default: none")
    teacher_weights: str | None = setting(None, _path, metavar="SRC", help="weights for a registry --teacher")
    mode: str = setting("hard", one_of(DISTILL_MODES), flat="distill",
                        help="DeiT distillation through the student's distillation head (distilled models), else its "
                             "logits: hard (the teacher's class) or soft (KL at --distill-tau)")
    alpha: float = setting(0.5, number_between(0.0, 1.0), flat="distill_alpha", parse=float,
                           help="weight of the teacher's term (1 - it: the labels)")
    tau: float = setting(1.0, positive, flat="distill_tau", parse=float, help="temperature of soft distillation")

    def rules(self) -> None:
        if self.teacher_weights is not None and self.teacher is None:
            teacher = keyword("teacher")
            fail("teacher_weights", self.teacher_weights, f"a {teacher} to load them into (or drop them)", teacher)


@dataclass
class LoRASettings(Settings):
    """Low-rank adapters trained instead of the weights."""

    rank: int = setting(0, int_between(0), flat="lora_rank", parse=int,
                        help="train rank-R LoRA adapters and the head instead of the weights (0: off)")
    alpha: float = setting(16.0, positive, flat="lora_alpha", parse=float, help="adapter scale alpha (update x "
                                                                                "alpha/R)")
    dropout: float = setting(0.0, number_between(0.0, 0.999999), flat="lora_dropout", parse=float,
                             help="dropout on the adapters' input")
    targets: tuple[str, ...] = setting(("qkv",), _names_of(LORA_TARGETS), flat="lora_targets", parse=_names,
                                       metavar="LIST", to_setting=tuple,
                                       help=f"comma-separated linears to adapt among {','.join(LORA_TARGETS)}")

    def config(self) -> Any:
        """The run's ``vitkit.lora.LoRAConfig`` (None when ``rank`` is 0: LoRA off)."""
        if not self.rank:
            return None
        from ..lora import LoRAConfig  # torch: imported when LoRA is asked for, not to validate a config

        return LoRAConfig(rank=self.rank, alpha=self.alpha, dropout=self.dropout, targets=tuple(self.targets))


def _reporters(v: Any) -> str | None:
    if not isinstance(v, tuple) or not all(isinstance(x, str) for x in v):
        return "a list of tracker names"
    from .tracking import unknown_reporter

    return unknown_reporter(v)


@dataclass
class RunSettings(Settings):
    """Where and how the run executes: output, seed, devices, checkpoints, logging, processes."""

    out: str | None = setting(None, _path, help="output folder")
    overwrite: bool = setting(False, boolean, help="replace a run already in --out (otherwise refused; see --resume)")
    seed: int = setting(0, int_between(0, 2**63 - 1), parse=int,
                        help="seed of the split, the initialisation and the augmentation")
    deterministic: bool = setting(False, boolean, help="deterministic kernels (a resumed run equals an uninterrupted "
                                                       "one)")
    threads: int | None = setting(None, optional_as(positive_int), parse=int, help="CPU threads for torch")
    device: str | None = setting(None, help="cpu, cuda or cuda:N (default: this rank's GPU if there is one, else the "
                                            "CPU)")
    resume: str | None = setting(None, _path, nargs="?", const="auto",
                                 help="continue from OUT/checkpoint.pt (or the given checkpoint) with the same "
                                      "training settings; a changed schedule (--epochs, --lr, --batch-size, ...) is "
                                      "refused: start a new run with --weights OUT/last instead")
    save_every_steps: int = setting(0, int_between(0), parse=int,
                                    help="also checkpoint every N steps (0: at the end of each epoch only)")
    export_samples: int | None = setting(None, optional_as(int_between(0)), parse=int,
                                         help="held-out images per class to write to OUT/samples")
    plots: bool = setting(True, boolean, flag="--no-plots", help="skip the PNG plots")
    log_every: int = setting(20, positive_int, parse=int,
                             help="steps between reads of the loss on the host (progress bar, non-finite check)")
    report_to: tuple[str, ...] = setting((), _reporters, parse=_names, metavar="LIST", to_setting=tuple,
                                         help="send each epoch's metrics row to these trackers too (comma-separated; "
                                              "built in: tensorboard, written to OUT/tensorboard)")
    strategy: str = setting("ddp", one_of(STRATEGIES),
                            help="ddp: every rank holds the whole model; fsdp: parameters, gradients and optimizer "
                                 "state sharded across ranks (torch FSDP2)")


GROUPS: dict[str, type[Settings]] = {
    "source": SourceSettings, "network": NetworkSettings, "optim": OptimSettings, "augment": AugmentSettings,
    "distillation": DistillSettings, "lora": LoRASettings, "run": RunSettings}


def _fields() -> Iterator[tuple[str, dataclasses.Field]]:
    for group, cls in GROUPS.items():
        for f in dataclasses.fields(cls):
            yield group, f


# flat name -> (group, field name): every setting's one place
WHERE: dict[str, tuple[str, str]] = {flat_name(f): (group, f.name) for group, f in _fields()}
_FLAT = dataclasses.make_dataclass("TrainSettings", [(name, Any, None) for name in WHERE])  # the names, for checks
# the settings that describe the data beyond a folder (`vitkit eval` takes them too)
DATA_SETTINGS = ("labels", "val_labels", "hf_dataset", "image_column", "label_column", "multi_label", "threshold")


@dataclass(init=False)
class TrainConfig:
    """A fine-tuning run: seven groups of settings. Build it from flat settings, as ``vitkit.train`` takes them
    (``TrainConfig(lr=1e-3, epochs=5, lora_rank=8)``), or from groups (``TrainConfig(optim=OptimSettings(lr=1e-3))``);
    read a setting from its group (``cfg.optim.lr``). ``None`` settings take the preset of the data.

    ``batch_size`` is the global batch of one optimizer step, across processes and accumulation steps,
    so a run gives the same updates on one device or many.
    """

    source: SourceSettings
    network: NetworkSettings
    optim: OptimSettings
    augment: AugmentSettings
    distillation: DistillSettings
    lora: LoRASettings
    run: RunSettings

    def __init__(self, **settings: Any) -> None:
        groups = {name: settings.pop(name) for name in GROUPS if isinstance(settings.get(name), GROUPS[name])}
        reject_unknown_fields_flat(settings)
        values: dict[str, dict[str, Any]] = {name: {} for name in GROUPS}
        for flat, value in settings.items():
            group, name = WHERE[flat]
            values[group][name] = value
        for name, cls in GROUPS.items():
            if name in groups and values[name]:
                raise ConfigError(f"{', '.join(values[name])} given twice: in {name}= and as settings; give one.")
            setattr(self, name, groups.get(name) or cls(**values[name]))

    def __getattr__(self, name: str) -> Any:
        if name in WHERE:
            group, field = WHERE[name]
            raise AttributeError(f"TrainConfig.{name} is read from its group: cfg.{group}.{field}")
        raise AttributeError(f"TrainConfig has no setting {name!r}")

    def flat(self) -> dict[str, Any]:
        """Every setting's value by its flat name (the keywords ``TrainConfig(**...)`` takes)."""
        return {flat_name(f): getattr(getattr(self, group), f.name) for group, f in _fields()}

    def replace(self, **settings: Any) -> TrainConfig:
        """A copy with ``settings`` (flat names) changed."""
        return TrainConfig(**{**self.flat(), **settings})

    def resolved(self) -> TrainConfig:
        """A copy with every preset setting filled in, validated."""
        preset = DIGITS_DEFAULTS if self.source.is_digits else FOLDER_DEFAULTS  # a label file or a dataset too
        flat = self.flat()
        changes = {k: v for k, v in preset.items() if flat[k] is None and v is not None}
        if self.optim.layer_decay is None and "layer_decay" not in changes:
            changes["layer_decay"] = 0.75 if self.network.weights else 1.0  # fine-tuning pretrained weights: LLRD
        out = self.replace(**changes)
        out.validate()
        return out

    def validate(self) -> None:
        """Raise ConfigError naming the first setting that is not allowed (each group, then across groups)."""
        for name in GROUPS:
            getattr(self, name).validate()
        if self.lora.rank and self.network.freeze != "none":
            hints = keyword("lora_rank", self.lora.rank), keyword("freeze", self.network.freeze)
            raise ConfigError(f"{hints[0]} trains only the adapters and the head; {hints[1]} cannot be combined with "
                              f"it. Drop one of the two.", hints=hints)
        if self.network.max_patches is not None:
            self._check_native()
        try:
            self.lora.config()
        except ConfigError as exc:
            hints = tuple(keyword(name) for name in ("lora_rank", "lora_alpha", "lora_dropout", "lora_targets"))
            raise ConfigError(f"{exc} (set by {'/'.join(map(str, hints))})", hints=hints) from None

    def _check_native(self) -> None:
        """Settings that mix or share whole pixel grids cannot take images of different shapes."""
        native = keyword("max_patches", self.network.max_patches)
        for name, value in (("mixup", self.augment.mixup), ("cutmix", self.augment.cutmix)):
            if value:
                other = keyword(name, value)
                raise ConfigError(f"{other} mixes images pixel by pixel, which needs them all at one size; with "
                                  f"{native} each image keeps its own shape. Drop one of the two.",
                                  hints=(other, native))
        if self.distillation.teacher is not None:
            other = keyword("teacher", self.distillation.teacher)
            raise ConfigError(f"{other} scores the student's batch, and with {native} that batch is patch sequences, "
                              f"which a teacher of another patch size cannot read. Drop one of the two.",
                              hints=(other, native))

    def to_dict(self) -> dict[str, Any]:
        """Every setting by its flat name (``report.json``'s ``config``, the training state's ``train_config``)."""
        return {name: list(value) if isinstance(value, tuple) else dict(value) if isinstance(value, dict) else value
                for name, value in self.flat().items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """From flat settings (``to_dict``'s form; lists become the tuples their settings hold)."""
        data = dict(data)
        reject_unknown_fields_flat(data)
        for key, value in data.items():
            group, name = WHERE[key]
            if isinstance(value, list) and _holds_tuple(group, name):
                data[key] = tuple(value)
        return cls(**data)


def _holds_tuple(group: str, name: str) -> bool:
    field = next(f for f in dataclasses.fields(GROUPS[group]) if f.name == name)
    default = field.default_factory() if field.default_factory is not dataclasses.MISSING else field.default
    return isinstance(default, tuple) or field.metadata.get("to_setting") is tuple


def reject_unknown_fields_flat(settings: dict[str, Any]) -> None:
    """A ConfigError naming each unknown setting with the closest known one."""
    reject_unknown_fields(_FLAT, settings, "training setting(s)")


def parse_freeze(spec: str) -> int | None:
    """'none' -> None (train all), 'backbone' -> 0 blocks, 'blocks:N' -> the last N blocks train."""
    match = FREEZE_RE.match(str(spec).strip())
    if not match:
        freeze = keyword("freeze", spec)
        raise ConfigError(f"{freeze} is not understood: expected {_freeze(None)}.", hints=(freeze,))
    if match.group(1) == "none":
        return None
    return 0 if match.group(1) == "backbone" else int(match.group(2))


__all__ = ["DATA_SETTINGS", "DIGITS_DEFAULTS", "DISTILL_MODES", "FOLDER_DEFAULTS", "GROUPS", "STRATEGIES",
           "TRAIN_PRECISIONS", "WHERE", "AugmentSettings", "DistillSettings", "LoRASettings", "NetworkSettings",
           "OptimSettings", "RunSettings", "Settings", "SourceSettings", "TrainConfig", "fail", "flag_of", "flat_name",
           "parse_freeze", "setting"]
