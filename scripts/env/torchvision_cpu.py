"""Make torchvision importable in the project's .venv on CPU torch (installed by scripts/setup.sh).

The torchvision wheel that matches torch 2.13.0 on PyPI is a CUDA build: its compiled operators
(``torchvision/_C.so``) link against CUDA libraries that a CPU torch does not have, so they cannot load, and
``import torchvision`` (and with it ``import timm``, and transformers' image classes) then fails with
"operator torchvision::nms does not exist". This hook runs once, just before torchvision is first imported:
if the compiled operators cannot load, it registers the two operator schemas torchvision checks at import
time (``nms``, ``qnms``) as placeholders, so the import succeeds. Everything in torchvision written in
Python (transforms, models) then works; calling ``torchvision.ops.nms`` raises torch's "could not run"
error. Where the compiled operators do load (a CPU build of torchvision), the hook does nothing.

vitkit itself never imports torchvision; this only serves the test-only references (timm, transformers).
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import os
import sys


def _compiled_ops_load(folder: str) -> bool:
    import torch

    library = os.path.join(folder, "_C.so")
    if not os.path.isfile(library):
        return False
    try:
        torch.ops.load_library(library)
    except OSError:
        return False
    return True


def _register_placeholders() -> None:
    import torch

    if hasattr(torch.ops.torchvision, "nms"):  # already defined (by torchvision or an earlier call)
        return
    lib = torch.library.Library("torchvision", "FRAGMENT")
    lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    lib.define("qnms(Tensor dets, Tensor scores, float iou_threshold, float scale, int zero_point) -> Tensor")
    sys.modules[__name__].placeholders = lib  # the fragment lives as long as the process


class _BeforeTorchvision(importlib.abc.MetaPathFinder):
    """Steps in at the first ``import torchvision``, then steps aside for good."""

    def find_spec(self, name, path=None, target=None):  # noqa: ANN001, ANN201 (importlib's protocol)
        if name != "torchvision":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec("torchvision")
        if spec is not None and spec.submodule_search_locations:
            folder = list(spec.submodule_search_locations)[0]
            if not _compiled_ops_load(folder):
                _register_placeholders()
        return None  # the ordinary finders import it


def install() -> None:
    if "torchvision" not in sys.modules and not any(isinstance(f, _BeforeTorchvision) for f in sys.meta_path):
        sys.meta_path.insert(0, _BeforeTorchvision())


install()
