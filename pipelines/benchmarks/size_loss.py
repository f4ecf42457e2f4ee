"""Size-penalty overhead: ENet training step (256x256, batch 8), partial CE + size vs partial CE alone."""

from __future__ import annotations

import statistics

import torch

from pipelines.benchmarks._training_step import RATIO_HEADERS, interleaved_medians, make_step, ratio_rows, setup_from_args
from pipelines.benchmarks.common import median_seconds, print_rows


def main(argv: list[str] | None = None) -> int:
    run = setup_from_args("size_loss", __doc__, argv, repeat=15, quick_repeat=3)
    pce, size_term, batch = run.partial_ce, run.size_term, run.batch
    steps = {"partial CE": make_step(run.net, pce, batch), "partial CE + size": make_step(run.net, run.direct_loss, batch)}
    medians, wall, cpu = interleaved_medians(steps, run.repeat)

    # The size term alone (forward + backward on fixed probabilities): the overhead without the noise of the step.
    logits = torch.randn(run.batch_size, 2, run.size, run.size, requires_grad=True)

    def term_only():
        probs = torch.softmax(logits, dim=1)
        (0.01 * size_term(probs, **batch)).backward()

    def softmax_only():
        torch.softmax(logits, dim=1).sum().backward()

    term_s = max(median_seconds(term_only, repeat=max(run.repeat, 5) * 4) - median_seconds(softmax_only, repeat=max(run.repeat, 5) * 4), 0.0)

    base = medians["partial CE"]
    print(run.describe())
    print_rows(RATIO_HEADERS, ratio_rows(list(steps), wall, cpu))
    ratio = medians["partial CE + size"] / base
    cpu_ratio = statistics.median(cpu["partial CE + size"]) / statistics.median(cpu["partial CE"])
    print(f"partial CE + size / partial CE: {ratio:.3f}x wall, {cpu_ratio:.3f}x CPU time "
          f"(target <= 1.03x; paper Table 5: 113/112 = 1.01x)")
    print(f"size term alone (forward + backward, softmax excluded): {1000 * term_s:.2f} ms = {100 * term_s / base:.2f}% of a step")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
