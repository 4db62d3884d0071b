"""`vitkit bench`: vitkit's inference paths against timm, transformers and ONNX Runtime, in one run."""

from __future__ import annotations

import argparse

from ..checks import cli_type, int_between, positive_int
from ..errors import ConfigError

MAX_BATCH = 4096  # images per timed call; more is a typo, not a benchmark


def cmd_bench(args: argparse.Namespace) -> int:
    import torch

    from ..bench import format_report, run_bench
    from ..graphmodel import is_graph_file
    from ..runtime import load_model

    if is_graph_file(args.model):
        raise ConfigError(f"{args.model!r} is an exported graph: bench the model it was written from and add the "
                          f"file as a row: `vitkit bench MODEL --optimized {args.model}`.")
    torch.manual_seed(args.seed)
    model = load_model(args.model, weights=args.weights, img_size=args.img_size)
    report = run_bench(model, batch_sizes=tuple(args.batch_size), iters=args.iters, warmup=args.warmup,
                       threads=args.threads, compile_=not args.no_compile, peers=not args.no_peers,
                       optimized=args.optimized)
    flags = [f"--batch-size {' '.join(map(str, args.batch_size))}", f"--iters {args.iters}",
             f"--threads {report.threads}"] + ["--no-compile"] * args.no_compile + ["--no-peers"] * args.no_peers
    flags += [f"--optimized {' '.join(args.optimized)}"] * bool(args.optimized)
    print(f"vitkit bench {args.model} {' '.join(flags)}")
    print(format_report(report))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("bench", help="time vitkit's inference paths against timm and others",
                              description="Same random weights in every runtime, outputs checked to agree, then "
                                          "timed round-robin after warm-up; median img/s, ratio to timm fp32 "
                                          "eager, share of this machine's GEMM peak.")
    p.add_argument("model", help="registry name, or a saved model directory / checkpoint")
    p.add_argument("--weights", help="weights to load into a registry model (default: random)")
    p.add_argument(
        "--img-size", type=cli_type(positive_int, "--img-size"), help="input size (default: the model's)")
    p.add_argument(
        "--batch-size", type=cli_type(int_between(1, MAX_BATCH), "--batch-size"), nargs="+", default=[1, 8],
        help="batch sizes (default: 1 8)")
    p.add_argument(
        "--iters", type=cli_type(positive_int, "--iters"), default=10,
        help="timed rounds per batch size (default 10)")
    p.add_argument(
        "--warmup", type=cli_type(int_between(0), "--warmup"), default=2,
        help="untimed calls per runtime first (default 2)")
    p.add_argument(
        "--threads", type=cli_type(positive_int, "--threads"),
        help="torch and ONNX Runtime threads (default: torch's)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random weights and inputs")
    p.add_argument("--no-compile", action="store_true", help="skip torch.compile (its cold compile takes minutes)")
    p.add_argument("--no-peers", action="store_true", help="vitkit's paths only (no timm, transformers, plain ORT)")
    p.add_argument("--optimized", nargs="+", default=[], metavar="FILE",
                   help="graph files written from MODEL by `vitkit optimize` or `vitkit export` (.xml, .onnx), "
                        "timed as rows of their own and checked against MODEL's eager fp32")
    p.set_defaults(func=cmd_bench, library_options={"img_size": "--img-size"})
