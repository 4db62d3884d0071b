"""Shared fixtures: the reference libraries (test-only) and real photos."""

from __future__ import annotations

import ctypes
import sys
import threading

import numpy as np
import pytest
import torch

import vitkit.registry
from _refs import import_timm, import_transformers


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--long", action="store_true", help="run the whole reliability corpus (thousands of cases)")


@pytest.fixture(scope="session")
def timm():
    return import_timm()


@pytest.fixture(scope="session")
def transformers():
    return import_transformers()


@pytest.fixture(scope="session")
def photos() -> dict[str, np.ndarray]:
    """Real RGB photos (H, W, 3) uint8 from scikit-image and scikit-learn."""
    import skimage.data
    from sklearn.datasets import load_sample_images

    out = {name: getattr(skimage.data, name)() for name in ("chelsea", "coffee", "astronaut", "rocket")}
    for i, img in enumerate(load_sample_images().images):
        out[f"sklearn_{i}"] = img
    return out


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    np.random.seed(0)


@pytest.fixture(autouse=True)
def _restore_registry():
    """Models a test registers are gone after it, so no test's outcome depends on which ran before it
    (config inference and `vitkit weights` consult the registry)."""
    saved = dict(vitkit.registry._REGISTRY)
    yield
    vitkit.registry._REGISTRY.clear()
    vitkit.registry._REGISTRY.update(saved)


@pytest.fixture(autouse=True)
def _no_path_trials(monkeypatch, tmp_path_factory):
    """backend='auto' takes the static rule in tests (a timed trial picks by the machine's load of the moment),
    and no test writes the user's ~/.cache; tests of the trials turn them on explicitly."""
    monkeypatch.setenv("VITKIT_AUTO_TRIAL", "0")
    monkeypatch.setenv("VITKIT_CACHE_DIR", str(tmp_path_factory.mktemp("vitkit-cache")))


class _StackT(ctypes.Structure):
    _fields_ = [("ss_sp", ctypes.c_void_p), ("ss_flags", ctypes.c_int), ("ss_size", ctypes.c_size_t)]


_ALT_STACK = ctypes.create_string_buffer(1 << 18)  # kept alive for the whole session


@pytest.fixture(autouse=True)
def _sound_signal_stack():
    """Give the main thread a valid alternate signal stack before each test. In one process that had run the
    whole suite, the kernel killed pytest with SIGSEGV (si_code SI_KERNEL: a signal frame it could not write)
    while the main thread slept waiting for a subprocess, and faulthandler could not report it. The likely cause: a
    native library left the thread's alternate stack pointing at memory it no longer holds, and CPython's
    handlers run on that stack (SA_ONSTACK). A fresh stack held here rules that out."""
    if sys.platform.startswith("linux") and threading.current_thread() is threading.main_thread():
        stack = _StackT(ctypes.addressof(_ALT_STACK), 0, ctypes.sizeof(_ALT_STACK))
        ctypes.CDLL(None, use_errno=True).sigaltstack(ctypes.byref(stack), None)
    yield
