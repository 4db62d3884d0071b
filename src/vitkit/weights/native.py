"""vitkit's own format: safetensors (timm names) plus its architecture and preprocessing as JSON.

A folder holds ``model.safetensors`` and ``config.json``; the same JSON also rides in the safetensors
metadata, so a lone ``.safetensors`` file rebuilds its model without being told the architecture.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import CheckpointError, Hint
from ..version import __version__
from .formats import Converted, Family
from .mapping import remap
from .numerics import VITKIT
from .readers import Checkpoint
from .timm import RULES
from .writers import write_json, write_safetensors

AS_TIMM = Hint(" Load it with format='timm' instead.", option="format", cli=" Load it with {flag} timm instead.",
               cli_without=" Convert it with `vitkit convert FILE OUT --from timm --to vitkit` and use OUT.")

if TYPE_CHECKING:
    from ..model import VisionTransformer

FORMAT = "vitkit"
METADATA_KEY = "vitkit"


def describe(model: VisionTransformer) -> dict[str, Any]:
    """The JSON that lets ``from_pretrained`` rebuild ``model``."""
    pcfg = model.pretrained_cfg
    return {"format": FORMAT, "vitkit_version": __version__, "model_name": model.model_name,
            "config": model.config.to_dict(), "pretrained_cfg": pcfg.to_dict() if pcfg is not None else None}


def _description(ckpt: Checkpoint) -> dict[str, Any] | None:
    if ckpt.config is not None and ckpt.config.get("format") == FORMAT:
        return ckpt.config
    if METADATA_KEY in ckpt.metadata:
        try:
            return json.loads(ckpt.metadata[METADATA_KEY])
        except (json.JSONDecodeError, RecursionError) as exc:
            raise CheckpointError(f"{ckpt.path}: the vitkit metadata is not valid JSON ({exc}). "
                                  "Re-save the model with vitkit.save_pretrained.") from None
    return None


def write(model: VisionTransformer, path: Path) -> Path:
    """A folder (config.json + model.safetensors), or one .safetensors file if ``path`` ends so."""
    desc = describe(model)
    metadata = {METADATA_KEY: json.dumps(desc)}
    if path.suffix == ".safetensors":
        return write_safetensors(model.state_dict(), path, metadata)
    write_safetensors(model.state_dict(), path / "model.safetensors", metadata)
    write_json(desc, path / "config.json")
    return path


class _NativeFamily(Family):
    def convert(self, ckpt: Checkpoint) -> Converted:
        desc = _description(ckpt)
        if not isinstance(desc, dict) or not isinstance(desc.get("config"), dict):
            raise CheckpointError(f"{ckpt.path} has no vitkit config (config.json with \"format\": \"vitkit\", or "
                                  f"'vitkit' safetensors metadata).{AS_TIMM.text}", hints=(AS_TIMM,))
        out = remap(ckpt.tensors, self.rules)
        return Converted(family=self.name, state=out.tensors, dropped=out.dropped, hints=dict(desc["config"]),
                         exact=True, pretrained_cfg=desc.get("pretrained_cfg"), model_name=desc.get("model_name"))


FAMILY = _NativeFamily(
    name=FORMAT,
    description="vitkit.save_pretrained: model.safetensors + config.json with \"format\": \"vitkit\"",
    signatures=(),
    rules=RULES,
    numerics=VITKIT,
    marker=lambda ckpt: (ckpt.config or {}).get("format") == FORMAT or METADATA_KEY in ckpt.metadata,
    write=write,
)
