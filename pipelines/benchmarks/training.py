"""Training throughput: a bundle epoch vs a plain PyTorch loop (images/s), and our ENet's step vs a straightforward ENet.

Two comparisons, each against a baseline measured in the same process, interleaved:

1. **Bundle epoch vs plain loop.** The ``wss_segmentation`` bundle's own ``train.json`` is built with
   ``monai.bundle.ConfigWorkflow`` (regime ``individual``, MLflow on, validation switched off with
   ``val_interval``), and its ``SupervisedTrainer`` runs one epoch at a time. Its baseline is a
   plain PyTorch loop over the same kind of loader (``wss_monai.data.make_dataloader`` with the
   same arguments), the same ENet (same initial weights), the same loss
   (``get_regime("individual").build_loss()``), Adam with the same settings and batch size.
   Timed per epoch: from the epoch's start to the end of its last iteration (data loading,
   forward, loss, backward, step; for the bundle also ignite, ``prepare_batch`` and the
   per-iteration handlers). The bundle's epoch with its end-of-epoch handlers (loss means,
   checkpoint, MLflow metrics, summary line) is reported too. Start-up (config parsing, cache,
   MLflow run creation) and the end of the run are not timed. Target: bundle / plain >= 0.9.
2. **ENet training step.** ``wss_monai.networks.ENet`` against :class:`PlainENet`, a
   straightforward ENet written here from the paper (Paszke et al. 2016, table 1) with plain
   modules; one training step each (forward, softmax, partial CE + 0.01 size, backward, Adam)
   at 256 x 256, batch 8, interleaved rounds, medians. Target: ours / plain <= 1.0 in time.
3. **The fast path vs the old path** in the bundle's loop, at 48 x 48 and 256 x 256, 1 and 2
   threads, with the step's distance to the arithmetic limit and the compile time
   (:mod:`pipelines.benchmarks._fast_path`). Targets: >= 2x at 48 x 48, >= 1.3x at 256 x 256.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from pipelines.benchmarks._bundle_loop import EpochClock as _EpochClock, bundle_workflow as _bundle_workflow
from pipelines.benchmarks._training_step import RATIO_HEADERS, interleaved_medians, make_step, ratio_rows, setup_from_args
from pipelines.benchmarks.common import print_rows


# --------------------------------------------------------------------------------------------
# a straightforward ENet (the baseline of part 2)


class PlainBottleneck(nn.Module):
    """One ENet bottleneck, every kind: ``regular``, ``dilated``, ``asymmetric``, ``down`` or ``up``.

    Extension branch: projection (1x1, or 2x2 stride 2 when downsampling) -> BN -> PReLU ->
    main convolution (3x3, dilated 3x3, 5x1 then 1x5, or 3x3 transposed stride 2 when
    upsampling) -> BN -> PReLU -> 1x1 expansion -> BN -> spatial dropout. Main branch: identity;
    max-pooling and zero channels when downsampling; 1x1 conv + BN and max-unpooling when
    upsampling. Sum, then PReLU.
    """

    def __init__(self, cin: int, cout: int, kind: str = "regular", dilation: int = 1, p: float = 0.1) -> None:
        super().__init__()
        self.kind = kind
        mid = cin // 4
        if kind == "down":
            first = nn.Conv2d(cin, mid, kernel_size=2, stride=2, bias=False)
        else:
            first = nn.Conv2d(cin, mid, kernel_size=1, bias=False)
        if kind == "asymmetric":
            conv = nn.Sequential(nn.Conv2d(mid, mid, (5, 1), padding=(2, 0), bias=False),
                                 nn.Conv2d(mid, mid, (1, 5), padding=(0, 2), bias=False))
        elif kind == "up":
            conv = nn.ConvTranspose2d(mid, mid, 3, stride=2, padding=1, output_padding=1, bias=False)
        else:
            conv = nn.Conv2d(mid, mid, 3, padding=dilation, dilation=dilation, bias=False)
        self.ext = nn.Sequential(first, nn.BatchNorm2d(mid), nn.PReLU(mid), conv, nn.BatchNorm2d(mid), nn.PReLU(mid),
                                 nn.Conv2d(mid, cout, 1, bias=False), nn.BatchNorm2d(cout), nn.Dropout2d(p))
        if kind == "down":
            self.pool = nn.MaxPool2d(2, stride=2, return_indices=True)
            self.pad = cout - cin
        if kind == "up":
            self.main = nn.Sequential(nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout))
            self.unpool = nn.MaxUnpool2d(2, stride=2)
        self.out = nn.PReLU(cout)

    def forward(self, x, indices=None):
        if self.kind == "down":
            main, indices = self.pool(x)
            zeros = torch.zeros(main.shape[0], self.pad, main.shape[2], main.shape[3], dtype=main.dtype, device=main.device)
            return self.out(torch.cat([main, zeros], 1) + self.ext(x)), indices
        if self.kind == "up":
            main = self.unpool(self.main(x), indices)
            return self.out(main + self.ext(x))
        return self.out(x + self.ext(x))


class PlainENet(nn.Module):
    """ENet as the paper's table 1 lists it, one layer after the other (the benchmark's baseline)."""

    def __init__(self, in_channels: int = 1, num_classes: int = 2) -> None:
        super().__init__()
        self.initial_conv = nn.Conv2d(in_channels, 16 - in_channels, 3, stride=2, padding=1, bias=False)
        self.initial_pool = nn.MaxPool2d(2, stride=2)
        self.initial_bn = nn.BatchNorm2d(16)
        self.initial_act = nn.PReLU(16)
        self.down1 = PlainBottleneck(16, 64, "down", p=0.01)
        self.stage1 = nn.ModuleList([PlainBottleneck(64, 64, p=0.01) for _ in range(4)])
        self.down2 = PlainBottleneck(64, 128, "down")
        layers = []
        for _ in range(2):  # stages 2 and 3
            layers += [PlainBottleneck(128, 128), PlainBottleneck(128, 128, "dilated", 2), PlainBottleneck(128, 128, "asymmetric"),
                       PlainBottleneck(128, 128, "dilated", 4), PlainBottleneck(128, 128), PlainBottleneck(128, 128, "dilated", 8),
                       PlainBottleneck(128, 128, "asymmetric"), PlainBottleneck(128, 128, "dilated", 16)]
        self.stage23 = nn.ModuleList(layers)
        self.up4 = PlainBottleneck(128, 64, "up")
        self.stage4 = nn.ModuleList([PlainBottleneck(64, 64), PlainBottleneck(64, 64)])
        self.up5 = PlainBottleneck(64, 16, "up")
        self.stage5 = PlainBottleneck(16, 16)
        self.fullconv = nn.ConvTranspose2d(16, num_classes, 3, stride=2, padding=1, output_padding=1)

    def forward(self, x):
        x = torch.cat([self.initial_conv(x), self.initial_pool(x)], 1)
        x = self.initial_act(self.initial_bn(x))
        x, i1 = self.down1(x)
        for layer in self.stage1:
            x = layer(x)
        x, i2 = self.down2(x)
        for layer in self.stage23:
            x = layer(x)
        x = self.up4(x, i2)
        for layer in self.stage4:
            x = layer(x)
        x = self.up5(x, i1)
        x = self.stage5(x)
        return self.fullconv(x)


def _parameters(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def enet_step(argv: list[str]) -> float:
    """Part 2: print the step times and return ours / plain (median wall time)."""
    run = setup_from_args("training", __doc__, argv, repeat=11, quick_repeat=3)
    torch.manual_seed(0)
    plain = PlainENet(1, 2)
    ours = run.net
    x = run.batch["image"][:1]
    assert plain(x).shape == ours(x).shape, "the two ENets must give the same output shape"
    steps = {"plain ENet (this module)": make_step(plain, run.direct_loss, run.batch),
             "wss_monai.networks.ENet": make_step(ours, run.direct_loss, run.batch)}
    medians, wall, cpu = interleaved_medians(steps, run.repeat, warmup=2)
    print(f"\n## ENet training step: {run.describe()}")
    print(f"parameters: ours {_parameters(ours):,}, plain {_parameters(plain):,}")
    print_rows(["network", *RATIO_HEADERS[1:]], ratio_rows(list(steps), wall, cpu))
    names = list(steps)
    ratio = medians[names[1]] / medians[names[0]]
    cpu_ratio = statistics.median(cpu[names[1]]) / statistics.median(cpu[names[0]])
    verdict = "meets" if ratio <= 1.0 else "misses"
    print(f"ours / plain step time: {ratio:.3f}x wall, {cpu_ratio:.3f}x CPU time (target <= 1.0: {verdict})")
    return ratio


# --------------------------------------------------------------------------------------------
# part 1: a bundle epoch vs a plain loop


def _plain_epoch(net, optimizer, loss_fn, loader, keys) -> tuple[float, int]:
    """One epoch of the plain loop: seconds and images."""
    net.train()
    images = 0
    start = time.perf_counter()
    for batch in loader:
        image = batch["image"]
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(net(image), {"image": image, **{k: batch[k] for k in keys}})
        loss.backward()
        optimizer.step()
        images += image.shape[0]
    return time.perf_counter() - start, images


def bundle_epoch(cases: int, size: int, batch_size: int, rounds: int, regime: str = "individual", quick: bool = False) -> float:
    """Part 1: print images/s of the bundle's epochs and of the plain loop; return bundle / plain."""
    from pipelines.benchmarks._bundle_loop import quiet_phantom
    from wss_monai.data import make_dataloader
    from wss_monai.regimes import get_regime

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        prepared = quiet_phantom(work, cases, size)
        with contextlib.redirect_stdout(io.StringIO()):
            workflow = _bundle_workflow(prepared, work, regime, batch_size)
        trainer = workflow.parser.get_parsed_content("train#trainer")
        for name in ("ignite.engine.engine.SupervisedTrainer", "wss_monai.train", "wss_monai.engine"):
            logging.getLogger(name).setLevel(logging.WARNING)
        clock = _EpochClock()
        clock.attach(trainer)

        spec = get_regime(regime).with_weak(workflow.parser.get_parsed_content("session").spec.weak)
        net = copy.deepcopy(trainer.network)  # same architecture and initial weights
        lr, betas = workflow.parser["learning_rate"], tuple(workflow.parser["betas"])
        optimizer = torch.optim.Adam(net.parameters(), lr=lr, betas=betas)
        loss_fn = spec.build_loss(softmax=True)
        loader = make_dataloader(prepared, "training", batch_size=batch_size, shuffle=True, num_workers=0, seed=0,
                                 augment=False, **spec.dataloader_kwargs())
        keys = [k for k in spec.batch_keys]

        plain_s, plain_n = [], []
        for r in range(rounds + 1):  # round 0 warms both up and is not counted
            order = ("bundle", "plain") if r % 2 == 0 else ("plain", "bundle")
            for which in order:
                if which == "bundle":
                    trainer.state.max_epochs = r + 1
                    trainer.run()
                else:
                    s, n = _plain_epoch(net, optimizer, loss_fn, loader, keys)
                    plain_s.append(s)
                    plain_n.append(n)
        with contextlib.redirect_stdout(io.StringIO()):
            workflow.finalize()

    def ips(seconds, images):
        return statistics.median(n / s for n, s in zip(images[1:], seconds[1:]))

    rows = [
        ["plain PyTorch loop", plain_n[-1], 1000 * statistics.median(plain_s[1:]), ips(plain_s, plain_n), 1.0],
        ["bundle: iterations", clock.images[-1], 1000 * statistics.median(clock.train_s[1:]), ips(clock.train_s, clock.images),
         ips(clock.train_s, clock.images) / ips(plain_s, plain_n)],
        ["bundle: with end-of-epoch handlers", clock.images[-1], 1000 * statistics.median(clock.epoch_s[1:]),
         ips(clock.epoch_s, clock.images), ips(clock.epoch_s, clock.images) / ips(plain_s, plain_n)],
    ]
    print(f"## Bundle epoch vs plain loop: wss_segmentation train.json, regime {regime}, {cases} phantom patients at {size} x {size}, "
          f"batch {batch_size}, {torch.get_num_threads()} threads, {rounds} interleaved epochs each (median; 1 warm-up epoch not counted)")
    print_rows(["loop", "images/epoch", "ms/epoch", "images/s", "ratio to plain"], rows)
    ratio = rows[1][4]
    print(f"bundle / plain images per second: {ratio:.3f} (iterations), {rows[2][4]:.3f} (with end-of-epoch handlers); "
          f"target >= 0.9: {'meets' if min(ratio, rows[2][4]) >= 0.9 else 'misses'}"
          + (" (--quick: epochs of a second or less, a smoke run rather than a measurement)" if quick else ""))
    return ratio


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="python -m pipelines.benchmarks training", description=__doc__.splitlines()[0],
                                     add_help=False, epilog="The ENet step options (--repeat, --batch, --size, --seed, "
                                     "--threads) are those of the other step benchmarks.")
    parser.add_argument("--quick", action="store_true", help="smoke run: tiny phantom, fewer rounds, small ENet step")
    parser.add_argument("--cases", type=int, default=None, help="phantom patients for the bundle part (default 12, quick 4)")
    parser.add_argument("--bundle-size", type=int, default=None, help="slice size of the bundle part (default 128, quick 32)")
    parser.add_argument("--bundle-batch", type=int, default=8, help="batch size of the bundle part (default 8)")
    parser.add_argument("--rounds", type=int, default=None, help="timed epochs of each loop (default 4, quick 2)")
    parser.add_argument("--skip-bundle", action="store_true", help="only the ENet step comparison")
    parser.add_argument("--skip-enet", action="store_true", help="leave out the ENet step comparison")
    parser.add_argument("--skip-fast-path", action="store_true", help="leave out the fast path vs the old path (part 3)")
    parser.add_argument("--fast-path-only", action="store_true", help="only part 3: the fast path vs the old path")
    parser.add_argument("--sizes", default=None, help="slice sizes of part 3 (default 48,256; quick 48)")
    parser.add_argument("--thread-counts", default=None, help="torch thread counts of part 3 (default 1,2; quick 1)")
    args, rest = parser.parse_known_args(argv)
    if "-h" in rest or "--help" in rest:
        parser.print_help()
        print()
    step_argv = rest + (["--quick"] if args.quick else [])
    if "--threads" in step_argv:  # the thread count applies to both parts
        torch.set_num_threads(int(step_argv[step_argv.index("--threads") + 1]))
    helping = "-h" in rest or "--help" in rest
    if args.fast_path_only:
        args.skip_bundle = args.skip_enet = True
    if not args.skip_fast_path and not helping:
        from pipelines.benchmarks import _fast_path

        sizes = [int(v) for v in (args.sizes or ("48" if args.quick else "48,256")).split(",")]
        counts = [int(v) for v in (args.thread_counts or ("1" if args.quick else "1,2")).split(",")]
        _fast_path.run(sizes, counts, rounds=args.rounds or (2 if args.quick else 4), quick=args.quick)
    if not args.skip_bundle and not helping:
        bundle_epoch(cases=args.cases or (4 if args.quick else 12), size=args.bundle_size or (32 if args.quick else 128),
                     batch_size=args.bundle_batch, rounds=args.rounds or (2 if args.quick else 4), quick=args.quick)
    if not args.skip_enet:
        enet_step(step_argv)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
