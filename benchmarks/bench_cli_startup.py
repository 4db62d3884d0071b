"""Start-up time of the `vitkit` command: what a user waits before anything happens.

Runs each command line in a fresh process (as a shell does) several times and reports the median and
the fastest wall time, and whether torch was imported. `vitkit --help`, `--version`, a mistyped command
and a subcommand's `--help` must answer in under 0.5 s without importing torch; `vitkit models` loads torch
(the registry builds configs) and shows what that costs.

    .venv/bin/python benchmarks/bench_cli_startup.py --repeats 7
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

TARGET_S = 0.5
COMMANDS = {
    "vitkit --help": ["--help"],
    "vitkit --version": ["--version"],
    "vitkit predcit (typo)": ["predcit"],
    "vitkit predict --help": ["predict", "--help"],
    "vitkit models": ["models"],
}
# the command line, plus a report of whether torch got imported (run after the command in the same process)
RUNNER = ("import sys, runpy\nsys.argv = ['vitkit', *sys.argv[1:]]\n"
          "try:\n    runpy.run_module('vitkit', run_name='__main__')\nexcept SystemExit:\n    pass\n"
          "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH', file=sys.stderr)")


def measure(args: list[str], repeats: int) -> dict[str, object]:
    times, torch_loaded = [], False
    for _ in range(repeats):
        start = time.perf_counter()
        out = subprocess.run([sys.executable, "-c", RUNNER, *args], capture_output=True, text=True)
        times.append(time.perf_counter() - start)
        torch_loaded = out.stderr.rstrip().endswith("\nTORCH") or out.stderr.strip() == "TORCH"
    return {"median_s": statistics.median(times), "min_s": min(times), "imports_torch": torch_loaded}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="runs per command line (default 5)")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    args = parser.parse_args()
    measure([], 1)  # warm the file cache once
    results = {name: measure(argv, args.repeats) for name, argv in COMMANDS.items()}
    python = statistics.median(
        [_timed([sys.executable, "-c", "pass"]) for _ in range(args.repeats)])
    if args.json:
        print(json.dumps({"python_startup_s": python, "results": results}, indent=2))
    else:
        print(f"python -c pass: {python:.3f} s (the floor)")
        print(f"{'command':26s} {'median':>8s} {'min':>8s}  torch")
        for name, r in results.items():
            print(f"{name:26s} {r['median_s']:7.3f}s {r['min_s']:7.3f}s  {'yes' if r['imports_torch'] else 'no'}")
    quick = ("vitkit --help", "vitkit --version", "vitkit predcit (typo)", "vitkit predict --help")
    fast = [n for n in quick if results[n]["median_s"] < TARGET_S and not results[n]["imports_torch"]]
    ok = len(fast) == len(quick)
    print(f"target: --help, --version, a typo and predict --help under {TARGET_S} s without torch: "
          f"{'met' if ok else 'NOT met'}")
    return 0 if ok else 1


def _timed(cmd: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, capture_output=True)
    return time.perf_counter() - start


if __name__ == "__main__":
    sys.exit(main())
