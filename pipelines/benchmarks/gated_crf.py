"""Gated CRF loss (forward + backward): shifted-slice window loop against an F.unfold implementation of the same formula."""

from __future__ import annotations

import argparse
import statistics
import sys

from pipelines.benchmarks.common import median_seconds, peak_rss_mib, print_rows

SETUP = """
import math, torch
import torch.nn.functional as F
torch.set_num_threads({threads})
torch.manual_seed(0)
from pipelines.benchmarks.gated_crf import unfold_gated_crf
from wss_monai.losses.gated_crf import GatedCRFLoss
B, C, H, W, R = {batch}, {classes}, {size}, {size}, {radius}
logits = torch.randn(B, C, H, W).cumsum(-1).div(8).requires_grad_(True)
image = torch.rand(B, 1, H, W)
ours = GatedCRFLoss([{{"weight": 1.0, "xy": 6.0, "image": 0.1}}], radius=R)
"""

OURS = "ours(torch.softmax(logits, 1), image=image).backward()"
UNFOLD = "unfold_gated_crf(torch.softmax(logits, 1), image, R, 6.0, 0.1).backward()"


def unfold_gated_crf(probs, image, radius: int, sigma_xy: float, sigma_image: float):
    """The same Potts loss written the unfold way (like the reference): (B, C, (2r+1)^2, H, W) tensors.

    Out-of-image neighbours are excluded with an unfolded validity mask, so the value equals
    GatedCRFLoss's (eq. 5, 10, 11) for normalised probabilities.
    """
    import torch
    import torch.nn.functional as F

    b, c, h, w = probs.shape
    k = 2 * radius + 1
    ys = torch.arange(h, dtype=probs.dtype).view(1, 1, h, 1).expand(b, 1, h, w) / sigma_xy
    xs = torch.arange(w, dtype=probs.dtype).view(1, 1, 1, w).expand(b, 1, h, w) / sigma_xy
    feats = torch.cat([ys, xs, image / sigma_image], dim=1)  # (B, 3, H, W)
    fu = F.unfold(feats, k, padding=radius).view(b, 3, k * k, h, w)
    kern = torch.exp(-0.5 * (fu - feats.unsqueeze(2)).pow(2).sum(1))  # (B, k*k, H, W)
    inside = F.unfold(torch.ones(b, 1, h, w, dtype=probs.dtype), k, padding=radius).view(b, k * k, h, w)
    centre = torch.ones(k * k, 1, 1, dtype=probs.dtype)
    centre[k * k // 2] = 0
    kern = kern * inside * centre
    pu = F.unfold(probs, k, padding=radius).view(b, c, k * k, h, w)
    agree = (probs.unsqueeze(2) * pu).sum(1)  # (B, k*k, H, W): p_a . p_b
    return (kern * (1.0 - agree)).sum() / (b * h * w)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipelines.benchmarks gated_crf", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer repeats (same sizes)")
    parser.add_argument("--batch", type=int, default=12)
    parser.add_argument("--classes", type=int, default=4)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--radius", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1: the 2 cores are shared)")
    parser.add_argument("--repeat", type=int, default=None, help="interleaved timing rounds (default 7, quick 3)")
    args = parser.parse_args(argv or [])
    repeat = args.repeat or (3 if args.quick else 7)
    candidates = {"ours (shifted slices)": OURS, "unfold": UNFOLD}
    setup = SETUP.format(threads=args.threads, batch=args.batch, classes=args.classes, size=args.size, radius=args.radius)
    # Peak memory first, each candidate in its own fresh process.
    rss = {name: peak_rss_mib(code, setup) for name, code in candidates.items()}
    scope: dict = {}
    exec(setup, scope)
    torch = scope["torch"]
    with torch.no_grad():
        p = torch.softmax(scope["logits"], 1)
        a = float(scope["ours"](p, image=scope["image"]))
        b = float(unfold_gated_crf(p, scope["image"], args.radius, 6.0, 0.1))
    agree = abs(a - b) / max(abs(b), 1e-12)
    fns = {name: (lambda code=code: exec(code, scope)) for name, code in candidates.items()}
    for fn in fns.values():  # warm-up
        fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeat):  # interleaved: both candidates see the same load on the shared CPU
        for name, fn in fns.items():
            times[name].append(median_seconds(fn, repeat=1, warmup=0))
    med = {name: statistics.median(t) for name, t in times.items()}
    print(f"Gated CRF forward+backward, {args.batch} x {args.classes} x {args.size} x {args.size}, r={args.radius}, "
          f"{args.threads} threads, {repeat} interleaved rounds; values agree to {agree:.1e} (relative)")
    rows = [[name, med[name] * 1e3, min(times[name]) * 1e3, max(times[name]) * 1e3, rss[name]] for name in candidates]
    print_rows(["implementation", "median ms", "min ms", "max ms", "peak RSS MiB (added)"], rows)
    base, ours = "unfold", "ours (shifted slices)"
    speedup = med[base] / med[ours]
    mem_ratio = rss[ours] / rss[base] if rss[base] > 0 else float("nan")
    print(f"speed-up {speedup:.2f}x (target >= 3x); peak memory ratio {mem_ratio:.3f} (target <= 0.5)")
    return 0 if agree < 1e-4 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
