"""`vitkit models`: list registered model names with their defaults."""

from __future__ import annotations

import argparse
import json
import sys

from ..config import did_you_mean_any


def cmd_models(args: argparse.Namespace) -> int:
    from ..registry import get_entry, list_models

    names = list_models(args.pattern)
    if not names:
        print(f"vitkit models: no model name matches {args.pattern!r}.{did_you_mean_any(args.pattern, list_models())} "
              f"Run `vitkit models` for all names.", file=sys.stderr)
        return 1
    if args.json:
        entries = {n: get_entry(n) for n in names}
        print(json.dumps([{"name": n, **e.pretrained_cfg.to_dict(), "num_params": e.num_params}
                          for n, e in entries.items()], indent=2))
        return 0
    for n in names:
        entry = get_entry(n)
        count = f"{entry.num_params / 1e6:8.2f}M" if entry.num_params else " " * 9
        print(f"{n:40s} {count}  {entry.description}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("models", help="list model names", description="List registered model names.")
    p.add_argument("pattern", nargs="?", default="*",
                   help="a word matched anywhere in the name (e.g. deit), or a shell-style pattern (e.g. 'vit_base_*')")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_models)
