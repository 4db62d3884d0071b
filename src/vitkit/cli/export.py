"""`vitkit export`: write a model to ONNX or a torch.export archive and verify it against eager PyTorch."""

from __future__ import annotations

import argparse

from ..checks import cli_type, int_between, positive_int
from ..choices import EXPORT_FORMATS, EXPORT_PRECISIONS, ONNX_OPSETS


def cmd_export(args: argparse.Namespace) -> int:
    from ..export import export_format, export_model
    from ..runtime import load_model

    export_format(args.out, args.format, opset=args.opset)  # a bad --out or --opset fails before the model loads
    model = load_model(args.model, weights=args.weights, img_size=args.img_size)
    result = export_model(model, args.out, format=args.format, precision=args.precision,
                          opset=args.opset, verify=not args.no_verify, max_patches=args.max_patches)
    if args.max_patches is not None:
        print(f"wrote {result.path} ({result.format}, {result.precision}, inputs patches {result.input_shape}, mask, "
              f"grids; dynamic batch and number of patches)")
        for (h, w), diff in result.checks.items():
            print(f"  grid {h}x{w}: max abs diff vs eager fp32 PyTorch {diff:.3g}")
        return 0
    print(f"wrote {result.path} ({result.format}, {result.precision}, input pixel_values {result.input_shape}, "
          f"dynamic batch, height and width)")
    for (h, w), diff in result.checks.items():
        print(f"  {h}x{w}: max abs diff vs eager fp32 PyTorch {diff:.3g}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("export", help="export a model to ONNX or torch.export",
                              description="Export a model to ONNX (or a torch.export .pt2 archive) with dynamic "
                                          "batch, height and width; verify it against eager PyTorch.")
    p.add_argument("model", help="registry name, or a saved model directory / checkpoint")
    p.add_argument("--out", required=True, help="the file to write (.onnx, or .pt2 for torch.export)")
    p.add_argument("--format", choices=EXPORT_FORMATS, help="default: from the suffix of --out (.pt2: torch-export)")
    p.add_argument("--precision", choices=EXPORT_PRECISIONS, default="fp32",
                   help="fp32; int8 (ONNX: ONNX Runtime dynamic quantization); bf16 (torch-export)")
    p.add_argument("--weights", help="weights to load into a registry model")
    p.add_argument(
        "--img-size", type=cli_type(positive_int, "--img-size"), help="input size (default: the model's)")
    p.add_argument(
        "--opset", type=cli_type(int_between(*ONNX_OPSETS), "--opset"), default=18, help="ONNX opset (default 18)")
    p.add_argument("--max-patches", type=cli_type(positive_int, "--max-patches"), metavar="N",
                   help="an ONNX graph of padded patch sequences (inputs patches, mask, grids: images at their own "
                        "aspect ratio), made and verified at N patches per image")
    p.add_argument("--no-verify", action="store_true", help="skip the check against PyTorch")
    p.set_defaults(func=cmd_export, library_options={"img_size": "--img-size"})
