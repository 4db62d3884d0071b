"""`vitkit export`: write a model to ONNX, a torch.export archive or an OpenVINO IR and verify it against eager
PyTorch; `vitkit optimize`: a calibrated int8 model with a report against fp32."""

from __future__ import annotations

import argparse

from ..checks import cli_type, int_between, positive_int
from ..choices import EXPORT_PRECISIONS, GRAPH_EXPORT_FORMATS, ONNX_OPSETS, OPTIMIZE_BACKENDS


def cmd_export(args: argparse.Namespace) -> int:
    from ..deploy import calibration_files, export_model, graph_export_format
    from ..runtime import load_model

    fmt = graph_export_format(args.out, args.format, opset=args.opset)  # a bad --out or --opset fails first
    if args.calibrate is not None:
        if (fmt, args.precision) != ("openvino", "int8"):
            from ..errors import ConfigError

            raise ConfigError(f"--calibrate is for OpenVINO int8 (--format openvino --precision int8), not "
                              f"{fmt} {args.precision}; for calibrated int8 ONNX use `vitkit optimize --backend "
                              f"onnxruntime`.")
        calibration_files(args.calibrate)
    model = load_model(args.model, weights=args.weights, img_size=args.img_size)
    extra = {"calibration": args.calibrate} if fmt == "openvino" else {}
    result = export_model(model, args.out, format=fmt, precision=args.precision, opset=args.opset,
                          verify=not args.no_verify, max_patches=args.max_patches, **extra)
    if args.max_patches is not None:
        print(f"wrote {result.path} ({result.format}, {result.precision}, inputs patches {result.input_shape}, mask, "
              f"grids; dynamic batch and number of patches)")
        for (h, w), diff in result.checks.items():
            print(f"  grid {h}x{w}: max abs diff vs eager fp32 PyTorch {diff:.3g}")
        return 0
    print(f"wrote {result.path} ({result.format}, {result.precision}, input pixel_values {result.input_shape}, "
          f"dynamic batch, height and width)")
    if fmt == "openvino":
        print(f"  with {result.path.with_suffix('.bin').name} and {result.description.name} (preprocessing, classes)")
        if fmt == "openvino" and result.precision == "int8" and args.calibrate is None:
            from ..deploy import BUNDLED_CALIBRATION

            print(f"  {BUNDLED_CALIBRATION}")
        if getattr(result, "cosine", None) is not None:
            print(f"  mean cosine vs eager fp32 PyTorch on the sample photos {result.cosine:.4f}")
    for (h, w), diff in result.checks.items():
        print(f"  {h}x{w}: max abs diff vs eager fp32 PyTorch {diff:.3g}")
    return 0


def cmd_optimize(args: argparse.Namespace) -> int:
    from ..deploy import BUNDLED_CALIBRATION, calibration_files, check_optimize_out, optimize_model
    from ..runtime import load_model

    check_optimize_out(args.out, args.backend, args.precision)  # bad flags fail before the model loads
    if args.calibrate is not None:
        calibration_files(args.calibrate)
    elif args.precision == "int8":
        print(BUNDLED_CALIBRATION)
    model = load_model(args.model, weights=args.weights, img_size=args.img_size)
    result = optimize_model(model, args.out, precision=args.precision, calibrate=args.calibrate,
                            backend=args.backend)
    print(result.summary())
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("export", help="export a model to ONNX, torch.export or OpenVINO",
                              description="Export a model to ONNX, a torch.export .pt2 archive or an OpenVINO IR "
                                          "(.xml and .bin, with the preprocessing and classes beside it) with "
                                          "dynamic batch, height and width; verify it against eager PyTorch.")
    p.add_argument("model", help="registry name, or a saved model directory / checkpoint")
    p.add_argument("--out", required=True, help="the file to write (.onnx, .pt2 for torch.export, .xml for OpenVINO)")
    p.add_argument("--format", choices=GRAPH_EXPORT_FORMATS,
                   help="default: from the suffix of --out (.pt2: torch-export, .xml: openvino)")
    p.add_argument("--precision", choices=EXPORT_PRECISIONS, default="fp32",
                   help="fp32; int8 (ONNX: ONNX Runtime dynamic quantization; OpenVINO: NNCF, calibrated); bf16 "
                        "(torch-export; OpenVINO: its bf16 inference hint)")
    p.add_argument("--calibrate", metavar="DIR", help="OpenVINO int8: calibrate on the images of DIR (default: the "
                                                      "bundled sample photos)")
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

    o = subparsers.add_parser("optimize", help="write a calibrated int8 model with a report against fp32",
                              description="Write a runnable optimized model (OpenVINO IR through NNCF, or ONNX "
                                          "with ONNX Runtime's static QDQ quantization) calibrated on the images "
                                          "of a folder, and a report against fp32 on held-out images of it (top-1 "
                                          "agreement, cosine); vitkit predict runs the file it writes as a model.")
    o.add_argument("model", help="registry name, or a saved model directory / checkpoint")
    o.add_argument("--out", required=True, help="the file to write: .xml (openvino) or .onnx (onnxruntime)")
    o.add_argument("--precision", choices=EXPORT_PRECISIONS, default="int8",
                   help="int8 (default; static, calibrated), fp32, or bf16 (openvino: its inference hint)")
    o.add_argument("--calibrate", metavar="DIR", help="a folder of images like the model will see; one in five is "
                                                      "held out for the report (default: the bundled sample photos)")
    o.add_argument("--backend", choices=OPTIMIZE_BACKENDS, default="openvino", help="default: openvino")
    o.add_argument("--weights", help="weights to load into a registry model")
    o.add_argument(
        "--img-size", type=cli_type(positive_int, "--img-size"), help="input size (default: the model's)")
    o.set_defaults(func=cmd_optimize, library_options={"img_size": "--img-size"})
