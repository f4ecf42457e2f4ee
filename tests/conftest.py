"""Suite-wide settings: deterministic, small, single-threaded torch so tests are quick on 2 cores."""

import os

os.environ.setdefault("MPLBACKEND", "Agg")

try:
    import torch

    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
except ImportError:  # data_prep tests still run without torch
    pass
