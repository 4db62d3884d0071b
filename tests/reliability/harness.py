"""Build the corpus, run it in worker processes (batches, restarted after a crash; FIFOs alone), judge it.

A case passes when it ends as expected within the time limit: a VitkitError (CLI: one error line, exit 2,
no traceback), or a load whose tensors equal the reference. It fails when anything else escapes, when it
runs past the limit or the memory limit, when a corrupt file loads with changed numbers although its format
records a checksum, when an error message echoes a file the user did not name, or when a pickle ran code.
"""

from __future__ import annotations

import importlib
import json
import random
import subprocess
import sys
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from corpus import Bases, Case, json_cases, weight_cases
from inputs import cli_cases, config_cases, image_cases
from special import all_special

WORKER = Path(__file__).with_name("worker.py")  # isolated cases (FIFOs) run in a forked child of it
TIME_LIMIT_S = 20
FAST_BULK_PER_CATEGORY = 4  # bulk mutations per category in the default (fast) run
RELIABILITY_TABLES = pytest.StashKey[list]()  # (mode, table) of each corpus run, printed by conftest.py


@dataclass
class Verdict:
    case: Case
    outcome: str
    detail: str
    passed: bool
    undetectable: bool = False  # loaded changed numbers from a format without checksums (counted, not failed)


def case_modules() -> list[Any]:
    """The surface modules beside this one (``cases_<surface>.py``), in name order. Each defines
    ``cases(root, rng) -> list[Case]`` and may define ``ACTIONS`` (action name -> function), which the worker
    adds to its own; a new surface is a new file, nothing here changes."""
    return [importlib.import_module(p.stem) for p in sorted(Path(__file__).parent.glob("cases_*.py"))]


def build(root: Path, long: bool) -> list[Case]:
    rng = random.Random(1234)
    bases = Bases(root)
    cases = [*weight_cases(bases, root, rng), *json_cases(bases, root), *all_special(bases, root),
             *image_cases(root, rng), *config_cases(), *cli_cases(bases, root)]
    for module in case_modules():
        folder = root / module.__name__
        folder.mkdir()
        cases += module.cases(folder, random.Random(f"{module.__name__}-1234"))
    if long:
        return cases
    per: dict[str, list[Case]] = defaultdict(list)
    for case in cases:
        if case.bulk:
            per[case.category].append(case)
    sampled = {c.id for group in per.values() for c in random.Random(7).sample(group, min(len(group),
                                                                                      FAST_BULK_PER_CATEGORY))}
    return [c for c in cases if not c.bulk or c.id in sampled]


def _run_chunk(specs: list[dict[str, Any]], folder: Path) -> dict[str, dict[str, Any]]:
    """Run ``specs`` in a worker; a worker that dies is restarted after the case it died on."""
    folder.mkdir(parents=True, exist_ok=True)
    cases_file, results_file = folder / "cases.jsonl", folder / "results.jsonl"
    cases_file.write_text("".join(json.dumps(s) + "\n" for s in specs))
    results: dict[str, dict[str, Any]] = {}
    for _ in range(len(specs) + 1):
        try:
            proc = subprocess.run([sys.executable, str(WORKER), str(cases_file), str(results_file)],
                                  capture_output=True, text=True, timeout=(TIME_LIMIT_S + 5) * len(specs) + 120)
            code, tail = proc.returncode, proc.stderr[-300:]
        except subprocess.TimeoutExpired:
            code, tail = "killed: worker timeout", ""
        started = None
        for line in results_file.read_text().splitlines() if results_file.exists() else []:
            row = json.loads(line)
            if row.get("start"):
                started = row["id"]
            else:
                results[row["id"]] = row
                started = None
        if started is not None and started not in results:
            results[started] = {"id": started, "outcome": "crash", "detail": f"worker died ({code}): {tail}",
                                "seconds": None}
        if all(s["id"] in results for s in specs):
            return results
    return results


def run(cases: list[Case], folder: Path, jobs: int = 2) -> list[Verdict]:
    specs = {}
    for case in cases:
        spec = case.make()
        specs[case.id] = {**spec, "id": case.id, "action": case.action, "isolate": case.isolate}
    ordered = [specs[c.id] for c in cases]
    chunks = [ordered[i::jobs] for i in range(jobs)]
    results: dict[str, dict[str, Any]] = {}
    with ThreadPoolExecutor(jobs) as pool:
        for part in pool.map(lambda ic: _run_chunk(ic[1], folder / f"chunk-{ic[0]}"), enumerate(chunks)):
            results.update(part)
    return [judge(c, specs[c.id], results.get(c.id)) for c in cases]


def judge(case: Case, spec: dict[str, Any], result: dict[str, Any] | None) -> Verdict:
    if result is None:
        return Verdict(case, "missing", "no result", False)
    outcome, detail = result["outcome"], result.get("detail", "")
    seconds = result.get("seconds") or 0
    ok = {"error": outcome == "error", "ok": outcome == "loaded",
          "either": outcome in ("error", "loaded")}[case.expect]
    undetectable = case.expect == "either" and outcome == "loaded-different" and not case.checksummed
    if seconds > TIME_LIMIT_S:
        ok, detail = False, f"took {seconds} s: {detail}"
    if spec.get("no_echo") and spec["no_echo"] in detail:
        ok, detail = False, f"echoes a file the user did not name: {detail}"
    if spec.get("marker") and Path(spec["marker"]).exists():
        ok, detail = False, "a pickle ran code while loading"
    return Verdict(case, outcome, detail, ok or undetectable, undetectable)


def table(verdicts: list[Verdict]) -> str:
    """Cases per category: total, passed, failed (and loads of changed bytes a format cannot detect)."""
    total, failed, blind = Counter(), Counter(), Counter()
    for v in verdicts:
        total[v.case.category] += 1
        failed[v.case.category] += not v.passed
        blind[v.case.category] += v.undetectable
    width = max(map(len, total), default=8) + 2
    lines = [f"{'category':<{width}}{'cases':>7}{'passed':>8}{'failed':>8}  note"]
    for cat in sorted(total):
        note = f"{blind[cat]} changed-bytes loads undetectable (format has no checksum)" if blind[cat] else ""
        lines.append(f"{cat:<{width}}{total[cat]:>7}{total[cat] - failed[cat]:>8}{failed[cat]:>8}  {note}".rstrip())
    n, f = sum(total.values()), sum(failed.values())
    lines.append(f"{'total':<{width}}{n:>7}{n - f:>8}{f:>8}")
    return "\n".join(lines)
