"""Child processes that die with their parent (Linux ``PR_SET_PDEATHSIG``) and answer its SIGINT.

A parent killed with SIGKILL cannot stop its children. Left alone, a data_prep worker would finish
its volume into a temporary folder the next run is about to remove as stale, and a bundle run
started by a pipeline would go on training and finish in MLflow after the rerun started it again
(two FINISHED runs for one key). On Linux each child asks the kernel for SIGKILL when its parent
dies, so a killed parent leaves no process behind; elsewhere nothing is asked, and children exit
when they next talk to the dead parent.

A supervised child must also hear the SIGINT its parent sends to stop it cleanly (a bundle run
records itself as KILLED in MLflow). A process started in the background by a non-interactive
shell inherits SIGINT *ignored*, an ignored signal stays ignored across ``exec``, and Python then
installs no ``KeyboardInterrupt`` handler: the child would train on and end FINISHED. The
``preexec_fn`` therefore gives the child SIGINT's default back before Python starts.

The one copy serves both ``data_prep`` (the initializer of its worker pools) and ``pipelines``
(the ``preexec_fn`` of the bundle runs it starts): it lives here because ``data_prep`` must not
import ``pipelines``, and both already import ``wss_monai``.
"""

from __future__ import annotations

import functools
import os
import signal
import sys
from collections.abc import Callable

__all__ = ["PR_SET_PDEATHSIG", "die_with_parent", "preexec_supervised_child"]

PR_SET_PDEATHSIG = 1


def _libc_prctl():
    """libc's ``prctl``, or None off Linux or where this libc lacks it."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


_PRCTL = _libc_prctl()
"""Looked up once, at import, in the parent: in a ``preexec_fn``, between fork and exec, nothing may be loaded."""


def die_with_parent(parent_pid: int) -> None:
    """Be killed when the parent process dies (Linux), or exit at once if it already has.

    Call it in the child: as a process pool's ``initializer`` (``initargs=(os.getpid(),)``), or
    through :func:`preexec_supervised_child` for :class:`subprocess.Popen`.
    """
    if _PRCTL is not None:
        _PRCTL(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    if os.getppid() != parent_pid:  # the parent died before the request took effect
        os._exit(1)


def _supervised_child(parent_pid: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # undo an inherited SIG_IGN (see the module docstring)
    die_with_parent(parent_pid)


def preexec_supervised_child() -> Callable[[], None]:
    """A ``preexec_fn`` for :class:`subprocess.Popen`: the child dies with this process (Linux) and
    answers SIGINT even where this process ignores it."""
    return functools.partial(_supervised_child, os.getpid())
