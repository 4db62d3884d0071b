"""Mixed-aspect photos at one patch budget: square crops against native-aspect patch sequences.

For the same model and the same budget of patches per image, it reports the tokens each way runs (real and
padding), the share of them wasted on padding, and images per second, timed round-robin in one run:

- square: every image resized and centre-cropped to the model's square input (what a fixed-size ViT sees);
- native, padded to the budget: each image at its own aspect ratio, every sequence padded to
  ``max_num_patches`` (what transformers' SigLIP 2 processor returns);
- native, padded to the longest: the same sequences padded only to the longest image of the batch.

    .venv/bin/python benchmarks/bench_native.py --model vit_small_patch16_224 --batch-size 8 --iters 6
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import torch
from PIL import Image

import vitkit
from vitkit.bench import interleaved_times
from vitkit.patches import PatchProcessor


def mixed_photos(count: int) -> list[Image.Image]:
    """Real photos (scikit-image, scikit-learn) cut to aspect ratios from 1:3 to 3:1."""
    from skimage import data
    from sklearn.datasets import load_sample_images

    sources = [Image.fromarray(a) for a in (data.astronaut(), data.coffee(), data.chelsea(), data.rocket())]
    sources += [Image.fromarray(a) for a in load_sample_images().images]
    ratios = [1 / 3, 1 / 2, 3 / 4, 1.0, 4 / 3, 16 / 9, 2.0, 3.0]
    out = []
    for i in range(count):
        img, ratio = sources[i % len(sources)], ratios[i % len(ratios)]
        w, h = img.size
        cw, ch = (w, min(h, round(w / ratio))) if w / h < ratio else (min(w, round(h * ratio)), h)
        out.append(img.crop((0, 0, cw, ch)))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="vit_small_patch16_224")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--iters", type=int, default=6)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = vitkit.create_model(args.model).eval()
    budget = model.config.num_patches
    photos = mixed_photos(args.batch_size)
    square = vitkit.ImageProcessor.from_model(model)(photos)
    padded = PatchProcessor.from_model(model)(photos)
    longest = PatchProcessor.from_model(model, pad_to="longest")(photos)
    prefix = model.num_prefix_tokens
    runs = {"square crops": lambda: model(square), "native, padded to budget": lambda: model(padded),
            "native, padded to longest": lambda: model(longest)}
    tokens = {"square crops": (len(photos) * (budget + prefix), len(photos) * (budget + prefix)),
              "native, padded to budget": (padded.mask.numel() + prefix * len(photos), padded.tokens),
              "native, padded to longest": (longest.mask.numel() + prefix * len(photos), longest.tokens)}
    with torch.no_grad():
        times = interleaved_times(runs, warmup=1, iters=args.iters)
    cpu = torch.backends.cpu.get_cpu_capability()
    print(f"{args.model}, budget {budget} patches an image, batch {len(photos)} photos of aspect 1:3 to 3:1, "
          f"{args.threads} threads, CPU {cpu}, torch {torch.__version__}")
    print("| input | tokens run | real patches | wasted on padding | img/s | spread |")
    print("|---|---:|---:|---:|---:|---:|")
    for label, seconds in times.items():
        run, real = tokens[label]
        real = real if label == "square crops" else real + prefix * len(photos)
        med = float(np.median(seconds))
        spread = (max(seconds) - min(seconds)) / med
        print(f"| {label} | {run:,} | {real:,} | {1 - real / run:.0%} | {len(photos) / med:.2f} | {spread:.0%} |")
    print("square crops see a cropped image (the parts outside the centre square are lost); the native rows see "
          "each whole image at its own aspect ratio within the same budget.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
