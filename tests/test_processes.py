"""wss_monai.processes: a supervised child hears SIGINT even when its parent was started ignoring it."""

from __future__ import annotations

import signal
import subprocess
import sys

from wss_monai.processes import preexec_supervised_child

PROBE = "import signal; print(signal.getsignal(signal.SIGINT) is signal.default_int_handler)"


def test_a_child_answers_sigint_although_its_parent_ignores_it():
    before = signal.signal(signal.SIGINT, signal.SIG_IGN)  # as a background job of a script starts
    try:
        plain = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True)
        supervised = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True,
                                    preexec_fn=preexec_supervised_child())
    finally:
        signal.signal(signal.SIGINT, before)
    assert plain.stdout.strip() == "False"  # the inherited SIG_IGN: Python installs no KeyboardInterrupt
    assert supervised.stdout.strip() == "True"
