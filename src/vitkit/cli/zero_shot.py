"""`vitkit zero-shot`: classify images by class names with an image-text model (SigLIP, CLIP)."""

from __future__ import annotations

import argparse

from ..choices import TEMPLATE_SETS, ZERO_SHOT_MODELS
from ..errors import ConfigError
from .use import show_predictions

ZERO_SHOT_TEXT = ("The most probable of the given class names for each image, with an image-text model: a "
                  "transformers SiglipModel, Siglip2Model (NaFlex: each image at its own aspect ratio) or "
                  "CLIPModel folder (with its tokenizer files). SigLIP scores each label with a sigmoid, CLIP "
                  "takes a softmax over the labels. Each label goes into every "
                  "--template (averaged per class); the default is 'a photo of a {}.'. Prints like "
                  "`vitkit predict`; --output FILE also writes CSV or JSON.")


def _labels(args: argparse.Namespace) -> list[str]:
    if args.labels is not None and args.labels_file is not None:
        raise ConfigError("Give the class names once: --labels 'a,b,c' or --labels-file FILE, not both.")
    if args.labels_file is not None:
        from ..labels import load_labels

        return load_labels(args.labels_file)
    if args.labels is None:
        raise ConfigError("No class names given: pass --labels 'cat,dog,bird' or --labels-file FILE "
                          "(one name per line).")
    return [name.strip() for name in args.labels.split(",")]


def cmd_zero_shot(args: argparse.Namespace) -> int:
    from ..zeroshot import zero_shot

    results = zero_shot(args.images, _labels(args), model=args.model, templates=args.template or None,
                        top_k=args.top_k, threshold=args.threshold, batch_size=args.batch_size, device=args.device)
    return show_predictions(results, output=args.output, as_json=args.json)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("zero-shot", help="classify images by class names with SigLIP or CLIP",
                              description=ZERO_SHOT_TEXT)
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files or folders (searched recursively)")
    p.add_argument("--model", required=True,
                   help=f"a transformers SiglipModel, Siglip2Model or CLIPModel folder, an open_clip folder, or a "
                        f"published model ({', '.join(ZERO_SHOT_MODELS)})")
    p.add_argument("--labels", help="class names separated by commas, e.g. 'cat,dog,bird'")
    p.add_argument("--labels-file", metavar="FILE", help="class names, one per line (.txt) or a JSON list")
    p.add_argument("--template", action="append", metavar="T",
                   help=f"a text with {{}} for the label (repeat for several, averaged), or a set: "
                        f"{', '.join(TEMPLATE_SETS)}")
    p.add_argument("--top-k", type=int, default=5, help="labels to show per image (default 5)")
    p.add_argument("--threshold", type=float, default=0.5,
                   help="SigLIP: also list the labels whose sigmoid score is above this (default 0.5)")
    p.add_argument("--batch-size", type=int, default=32, help="images per forward pass (default 32)")
    p.add_argument("--device", help="torch device, e.g. cpu or cuda:0 (default: a GPU if there is one)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--output", metavar="FILE",
                   help="also write every prediction to FILE: .csv (one row per image and rank) or .json")
    p.set_defaults(func=cmd_zero_shot)
