"""`vitkit serve MODEL`: the model behind HTTP (see vitkit.serve)."""

from __future__ import annotations

import argparse

from .use import _add_model

SERVE_TEXT = ("Serve a model over HTTP with dynamic batching (LitServe): POST /predict, /features and /attention "
              "take an image (the multipart field 'image' or the raw bytes as the body); an image-text model (SigLIP, "
              "CLIP folder) answers POST /zero-shot with the labels of each request (?labels=a,b,c); GET / is a "
              "page to try it, "
              "/health answers 200 once the model is loaded and warmed up, /metrics is Prometheus text and /docs the "
              "OpenAPI page. SIGTERM finishes the requests in flight, then exits 0.")


def cmd_serve(args: argparse.Namespace) -> int:
    from ..serve import serve
    from ..serve.settings import from_args

    settings = from_args(args)
    serve(args.model, settings, weights=args.weights, labels=args.labels,
          log_level="info" if args.verbose else "warning")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    from ..serve.settings import add_flags

    p = subparsers.add_parser("serve", help="serve a model over HTTP (dynamic batching, a page to try it)",
                              description=SERVE_TEXT)
    _add_model(p, positional=True)
    p.add_argument("--class-names", "--labels", dest="labels", metavar="NAMES",
                   help="class names: 'imagenet-1k', 'digits', or a file (one name per line / JSON); "
                        "--labels is the older spelling")
    add_flags(p)
    p.set_defaults(func=cmd_serve)
