"""`--engine ray` for `vitkit predict` and `vitkit features`: the same work as a Ray Data job (vitkit.ray)."""

from __future__ import annotations

import argparse
import sys

from ..errors import ConfigError

ENGINES = ("local", "ray")


def add_engine_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("a Ray job (--engine ray)")
    g.add_argument("--engine", choices=ENGINES, default="local",
                   help="local (this process, the default) or ray: a Ray Data job whose actors hold the model, "
                        "writing Parquet (one row per image) to the output folder")
    g.add_argument("--address", help="with --engine ray: a running Ray cluster ('auto', 'ray://HEAD:10001'); "
                                     "default: start a local one")
    g.add_argument("--num-workers", type=int, default=2,
                   help="with --engine ray: actors, each holding a copy of the model (default 2)")
    g.add_argument("--column", default="path",
                   help="with --engine ray and a .parquet input: the column of image paths (default 'path')")


def _refuse(args: argparse.Namespace, unsupported: dict[str, object]) -> None:
    for flag, default in unsupported.items():
        if getattr(args, flag.lstrip("-").replace("-", "_"), default) != default:
            raise ConfigError(f"{flag} does not apply to --engine ray (a Ray job splits the work by itself and "
                              f"runs fp32 eager); drop it, or use --engine local.")


def _report(result: object, what: str) -> int:
    for path, error in result.skipped:
        print(f"skipped {path}: {error}", file=sys.stderr)
    print(f"wrote {what} of {result.rows} image(s) as Parquet to {result.out} ({len(result.skipped)} skipped)")
    return 0


def run_predict(args: argparse.Namespace) -> int:
    from ..ray import run_job

    _refuse(args, {"--precision": "fp32", "--backend": "eager", "--json": False})
    if not args.output:
        raise ConfigError("--engine ray writes Parquet: give --output FOLDER (new or empty).")
    result = run_job(args.images, args.output, task="predict", model=args.model, weights=args.weights,
                     address=args.address, num_workers=args.num_workers, batch_size=args.batch_size,
                     top_k=args.top_k, labels=args.labels, column=args.column, device=args.device)
    return _report(result, "the predictions")


def run_features(args: argparse.Namespace) -> int:
    from ..ray import run_job

    _refuse(args, {"--precision": "fp32", "--layers": None, "--rank": None, "--world-size": None,
                   "--merge": False})
    if not args.inputs or not args.model:
        raise ConfigError("give image files or folders (or a .parquet file of paths) and --model.")
    result = run_job(args.inputs, args.out, task="features", model=args.model, weights=args.weights,
                     address=args.address, num_workers=args.num_workers, batch_size=args.batch_size,
                     pool=args.pool, column=args.column, device=args.device)
    return _report(result, "the features")
