"""`vitkit export`: write a model to ONNX and verify it with ONNX Runtime."""

from __future__ import annotations

import argparse

from ..export import export_onnx
from ..runtime import load_model


def cmd_export(args: argparse.Namespace) -> int:
    model = load_model(args.model, weights=args.weights, img_size=args.img_size)
    result = export_onnx(model, args.out, opset=args.opset, verify=not args.no_verify)
    print(f"wrote {result.path} (input pixel_values {result.input_shape}, dynamic batch)")
    if result.max_abs_diff is not None:
        print(f"ONNX Runtime vs PyTorch: max abs diff {result.max_abs_diff:.3g}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("export", help="export a model to ONNX",
                              description="Export a model to ONNX; verify it against PyTorch with ONNX Runtime.")
    p.add_argument("model", help="registry name, or a saved model directory / checkpoint")
    p.add_argument("--out", required=True, help="the .onnx file to write")
    p.add_argument("--weights", help="weights to load into a registry model")
    p.add_argument("--img-size", type=int, help="input size (default: the model's)")
    p.add_argument("--opset", type=int, default=18, help="ONNX opset (default 18)")
    p.add_argument("--no-verify", action="store_true", help="skip the ONNX Runtime check")
    p.set_defaults(func=cmd_export)
