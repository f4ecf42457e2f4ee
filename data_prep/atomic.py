"""Write outputs so that nothing half-written is ever left behind, even by a killed run.

Everything goes to a temporary sibling first and is renamed into place only once complete:
``os.replace`` within one folder is atomic, so a reader (or a re-run after a crash) sees either
the old state or the finished new one.

A run killed with SIGKILL (or by the OOM killer, or a power cut) cannot remove its temporary
folder ``.<name>.partial-XXXXXXXX``. The next :func:`atomic_dir` for the same target removes such
stale folders, safely:

- only names that this module creates for that exact target: ``.<name>.partial-`` followed by
  the 8 characters :func:`tempfile.mkdtemp` draws, and ``.<name>.old-<pid>`` (the previous output
  moved aside during an ``overwrite`` swap);
- only when no live writer could own them. Every writer holds a shared ``flock`` on the parent
  folder for as long as its temporary folder exists; cleaning needs the exclusive lock, taken
  without waiting. The kernel drops a killed process's locks, so a stale folder is one whose
  writer is gone, whatever its pid became since. When another writer is alive in the same
  parent folder, cleaning is simply left to a later run.
- a run killed between the two renames of an overwrite leaves the target missing and the
  previous output in ``.<name>.old-<pid>``: it is renamed back, so the previous output is never lost.

Worker processes never outlive their parent (see :mod:`data_prep.workers`), so nothing writes
into a folder whose owner is dead. Without ``fcntl`` (Windows), or on a file system without
``flock``, stale folders are not cleaned.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from data_prep.errors import InputError

try:
    import fcntl
except ImportError:  # pragma: no cover - not on Linux or macOS
    fcntl = None

#: mkdtemp's random part: 8 characters from this set (CPython's tempfile._RandomNameSequence).
_RANDOM_PART = r"[a-z0-9_]{8}"


def partial_pattern(final: str | Path) -> re.Pattern:
    """The names of the temporary folders :func:`atomic_dir` creates for ``final`` (and only for it)."""
    name = re.escape(Path(final).name)
    return re.compile(rf"\.{name}\.partial-{_RANDOM_PART}")


def _old_pattern(final: Path) -> re.Pattern:
    return re.compile(rf"\.{re.escape(final.name)}\.old-\d+")


@contextlib.contextmanager
def atomic_dir(final: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary folder beside ``final``; on success rename it to ``final``.

    On any exception the temporary folder is removed and ``final`` is untouched. With
    ``overwrite`` an existing ``final`` folder is replaced only after the new one is complete (an
    existing file is never replaced). Stale temporaries of killed runs are removed first.
    """
    final = Path(final)
    _make_parent(final)
    with _writer_lock(final):
        if final.exists() and not overwrite:
            raise FileExistsError(f"{final} already exists")
        if final.exists() and not final.is_dir():
            raise InputError(final, "exists and is not a folder; refusing to replace it")
        try:
            tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.partial-", dir=final.parent))
        except OSError as err:
            raise InputError(final.parent, f"cannot create the output here ({err.strerror or err})") from None
        try:
            yield tmp
            if final.exists():
                old = final.with_name(f".{final.name}.old-{os.getpid()}")
                os.replace(final, old)
                os.replace(tmp, final)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise


def clean_stale(final: str | Path) -> list[Path]:
    """Remove what killed runs left for ``final`` (when no writer is alive there); return what was removed.

    A missing ``final`` with a ``.<name>.old-<pid>`` beside it (a run killed between the two renames
    of an overwrite) gets that previous output back instead. Callers check whether ``final``
    exists after this.
    """
    final = Path(final)
    if not final.parent.is_dir():
        return []
    with _writer_lock(final) as removed:
        return removed


def _make_parent(final: Path) -> None:
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise InputError(final.parent, f"cannot create the output's parent folder ({err.strerror or err})") from None


@contextlib.contextmanager
def _writer_lock(final: Path) -> Iterator[list[Path]]:
    """Hold a shared lock on ``final``'s parent folder; clean stale temporaries first if no one else holds it."""
    removed: list[Path] = []
    if fcntl is None:
        yield removed
        return
    try:
        fd = os.open(final.parent, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError as err:
        raise InputError(final.parent, f"cannot open the output's parent folder ({err.strerror or err})") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pass  # another writer is alive in this folder: its temporaries are not stale; clean next time
        except OSError:  # no flock on this file system (some network mounts): write, but never clean
            yield removed
            return
        else:
            removed = _remove_stale(final)
        # Converting exclusive to shared may briefly let another cleaner in: harmless, because this
        # process creates its own temporary folder only once it holds the shared lock.
        fcntl.flock(fd, fcntl.LOCK_SH)
        yield removed
    finally:
        os.close(fd)  # releases the lock


def _remove_stale(final: Path) -> list[Path]:
    """Under the exclusive lock: every temporary of ``final`` belongs to a dead writer."""
    partial, old = partial_pattern(final), _old_pattern(final)
    removed, olds = [], []
    for entry in sorted(final.parent.iterdir()):
        if entry.is_symlink() or not entry.is_dir():
            continue
        if partial.fullmatch(entry.name):
            removed.append(entry)
        elif old.fullmatch(entry.name):
            olds.append(entry)
    if olds and not final.exists():
        newest = max(olds, key=lambda p: p.stat().st_ctime)  # renamed aside last
        os.replace(newest, final)
        olds.remove(newest)
    for entry in removed + olds:
        shutil.rmtree(entry, ignore_errors=True)
    return removed + olds


@contextlib.contextmanager
def atomic_file(final: str | Path, mode: str = "wb") -> Iterator:
    """Open a temporary file beside ``final`` for writing; rename it to ``final`` when closed cleanly."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".partial", dir=final.parent)
    try:
        with os.fdopen(fd, mode) as handle:
            yield handle
        os.replace(tmp, final)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
