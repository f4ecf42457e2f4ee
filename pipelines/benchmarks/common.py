"""Timing helpers shared by the benchmarks (wall-clock medians, peak memory in a fresh process)."""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from typing import Callable


def median_seconds(fn: Callable[[], object], repeat: int = 5, warmup: int = 1) -> float:
    """Median wall-clock seconds of ``fn()`` over ``repeat`` calls after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def peak_rss_mib(code: str, setup: str = "") -> float:
    """Peak resident memory (MiB) that ``code`` adds in a fresh Python process after ``setup``.

    Each candidate runs in its own process so one candidate's allocations cannot hide another's;
    the peak after ``setup`` alone (imports, inputs) is measured the same way and subtracted.
    The peak is the kernel's ``VmHWM`` of the child: unlike ``ru_maxrss``, which Linux carries
    over from the parent across fork and exec, it belongs to the child's own address space.
    """
    runner = (
        "import sys\n"
        "exec(compile(sys.stdin.read(), '<benchmark>', 'exec'))\n"
        "hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM:')][0]\n"
        "print(int(hwm.split()[1]))\n"
    )

    def run(body: str) -> float:
        out = subprocess.run([sys.executable, "-c", runner], input=body, check=True, capture_output=True, text=True, encoding="utf-8", errors="replace")
        return int(out.stdout.strip().splitlines()[-1]) / 1024.0

    return run(setup + "\n" + code) - run(setup)


def print_rows(headers: list[str], rows: list[list[object]]) -> None:
    """Print a Markdown table (readable in a terminal, pasteable into a closing note)."""
    cells = [[str(c) for c in headers]] + [[f"{c:.3g}" if isinstance(c, float) else str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    fmt = "| " + " | ".join(f"{{:{w}}}" for w in widths) + " |"
    print(fmt.format(*cells[0]))
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in cells[1:]:
        print(fmt.format(*row))


def keep_freed_memory() -> bool:
    """Tell glibc's allocator to keep freed memory in this process (benchmarks only).

    By default glibc returns large freed blocks to the kernel, and the next step of the same
    shape pays for fresh pages again; PyTorch's CPU tuning advice is an allocator that keeps them
    (jemalloc, tcmalloc). This does the same with glibc's own knobs. Returns False where not
    available (another libc or OS).
    """
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        m_trim_threshold, m_mmap_threshold = -1, -3
        ok = libc.mallopt(m_trim_threshold, 1 << 30) and libc.mallopt(m_mmap_threshold, 32 << 20)
    except (OSError, AttributeError):
        return False
    return bool(ok)
