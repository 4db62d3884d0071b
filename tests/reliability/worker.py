"""Run reliability cases in this process, each under an alarm, inside an address-space limit.

Usage: ``python worker.py CASES.jsonl RESULTS.jsonl``. Before each case the worker appends a ``start``
line to RESULTS, after it a result line, so the parent can tell which case a crash or a kill interrupted.
The memory limit (``RLIMIT_AS``: what is mapped after the imports plus ``EXTRA_BYTES``) makes an
allocation beyond it fail; the case then ends in a MemoryError/RuntimeError, which counts as a failure.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import resource
import signal
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import torch

import vitkit
from vitkit.cli import main as cli_main
from vitkit.data.images import load_image
from vitkit.errors import VitkitError
from vitkit.processor import ImageProcessor
from vitkit.registry import known_configs
from vitkit.weights import inventory

TIME_LIMIT_S = 20
EXTRA_BYTES = 2**30


class CaseTimeout(BaseException):
    """Raised by the alarm: a case ran past TIME_LIMIT_S (BaseException: no `except Exception` swallows it)."""


def _alarm(signum: int, frame: Any) -> None:
    raise CaseTimeout(f"ran past {TIME_LIMIT_S} s")


def _vm_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmSize:"):
            return int(line.split()[1]) * 1024
    return 0


def limit_memory(extra: int = EXTRA_BYTES) -> None:
    limit = _vm_bytes() + extra
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


# ---------------------------------------------------------------------- actions
def _same_state(model: torch.nn.Module, ref_path: str) -> bool:
    from safetensors.torch import load_file

    ref = load_file(ref_path)
    state = model.state_dict()
    return set(ref) == set(state) and all(torch.equal(state[k].float(), ref[k].float()) for k in ref)


def act_load(case: dict[str, Any]) -> str:
    model = vitkit.from_pretrained(case["path"], **case.get("kwargs", {}))
    if case.get("ref") and not _same_state(model, case["ref"]):
        return "loaded-different"
    return "loaded"


def act_inventory(case: dict[str, Any]) -> str:
    inventory(case["path"], known=known_configs())
    return "loaded"


def act_config(case: dict[str, Any]) -> str:
    vitkit.ViTConfig.from_dict(json.loads(case["json"]))
    return "loaded"


def act_image(case: dict[str, Any]) -> str:
    img = load_image(case["path"])
    ImageProcessor()(img)  # 224: a thin strip scaled to it is what costs memory
    return "loaded"


def act_cli(case: dict[str, Any]) -> str:
    err = io.StringIO()
    out = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        try:
            code = cli_main(case["argv"])
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 2
    text = err.getvalue()
    lines = [ln for ln in text.splitlines() if "error:" in ln]
    if "Traceback" in text:
        raise AssertionError(f"traceback on stderr: {text[-500:]}")
    if code == 0:
        return "loaded"
    if code != 2 or len(lines) != 1:
        raise AssertionError(f"exit {code}, {len(lines)} error line(s): {text[-300:]!r}")
    raise _CliError(lines[0])


class _CliError(VitkitError):
    """A CLI case that ended as it should: one error line, exit 2."""


ACTIONS = {"load": act_load, "inventory": act_inventory, "config": act_config, "image": act_image, "cli": act_cli}


def add_surface_actions() -> None:
    """The actions the ``cases_<surface>.py`` modules beside this file define (their ``ACTIONS``)."""
    import importlib

    for path in sorted(Path(__file__).parent.glob("cases_*.py")):
        ACTIONS.update(getattr(importlib.import_module(path.stem), "ACTIONS", {}))


def _files_harmed(case: dict[str, Any]) -> str | None:
    """What the case did to files it must leave alone: ``kept`` (path -> sha256 of its bytes: changed or removed)
    and ``forbidden`` (paths outside the outputs: written), or None."""
    for path, digest in case.get("kept", {}).items():
        if not os.path.isfile(path) or hashlib.sha256(Path(path).read_bytes()).hexdigest() != digest:
            return f"{path} was changed or removed"
    return next((f"{path} was written" for path in case.get("forbidden", []) if os.path.lexists(path)), None)


def run_case(case: dict[str, Any]) -> dict[str, Any]:
    """Run one case: outcome 'error' (a VitkitError), 'loaded', 'loaded-different', or 'crash' (anything else,
    and any case that changed a file it had to keep or wrote one outside its outputs)."""
    start = time.perf_counter()
    signal.alarm(TIME_LIMIT_S)
    try:
        outcome, detail = ACTIONS[case["action"]](case), ""
    except VitkitError as exc:
        outcome, detail = "error", f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"
    except CaseTimeout as exc:
        outcome, detail = "crash", f"timeout: {exc}"
    except BaseException as exc:  # noqa: BLE001 - the point is to see what escapes
        tb = traceback.extract_tb(exc.__traceback__)[-1]
        outcome, detail = "crash", f"{type(exc).__name__}: {str(exc)[:300]} at {tb.filename}:{tb.lineno}"
    finally:
        signal.alarm(0)
    harmed = _files_harmed(case)
    if harmed is not None:
        outcome, detail = "crash", f"{harmed} ({outcome}: {detail})"
    return {"id": case["id"], "outcome": outcome, "detail": detail, "seconds": round(time.perf_counter() - start, 3)}


def run_isolated(case: dict[str, Any]) -> dict[str, Any]:
    """Run a case in a forked child (a FIFO that blocks, a crash, a leak stay there); kill it past the limit."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: run, report through the pipe, leave without cleanup
        os.close(read_fd)
        os.write(write_fd, json.dumps(run_case(case)).encode())
        os._exit(0)
    os.close(write_fd)
    deadline = time.monotonic() + TIME_LIMIT_S + 5
    while time.monotonic() < deadline and os.waitpid(pid, os.WNOHANG) == (0, 0):
        time.sleep(0.02)
    else:
        if time.monotonic() >= deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
    with os.fdopen(read_fd, "rb") as f:
        data = f.read()
    if not data:
        return {"id": case["id"], "outcome": "crash", "detail": "isolated child died or hung", "seconds": None}
    return json.loads(data)


def warm_up() -> None:
    """Pay the one-time costs (torch imports its reference kernels on the first meta-device init) before the
    memory limit is set and before the first case's clock starts."""
    with torch.device("meta"):
        vitkit.VisionTransformer(vitkit.ViTConfig(img_size=16, patch_size=8, embed_dim=64, depth=1, num_heads=1))


def main(cases_path: str, results_path: str) -> None:
    torch.set_num_threads(1)
    signal.signal(signal.SIGALRM, _alarm)
    add_surface_actions()
    warm_up()
    cases = [json.loads(line) for line in Path(cases_path).read_text().splitlines() if line]
    done = set()
    if Path(results_path).exists():  # a restarted worker skips what its predecessor finished or died on
        done = {json.loads(line)["id"] for line in Path(results_path).read_text().splitlines() if line}
    limit_memory()
    with open(results_path, "a") as out:
        for case in cases:
            if case["id"] in done:
                continue
            out.write(json.dumps({"id": case["id"], "start": True}) + "\n")
            out.flush()
            result = run_isolated(case) if case.get("isolate") else run_case(case)
            out.write(json.dumps(result) + "\n")
            out.flush()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
