"""The disk spool: batches the store did not take, kept until a replay delivers them.

One file per batch, ``<ns since epoch, 20 digits>-<pid>-<seq>.lp``: names sort in the order the
batches were spooled. A file is line protocol (millisecond timestamps) after one comment line
(``# clusterkit spool v1 …``; comment lines are never sent). Files are written atomically
(a temporary ``.clusterkit-spool-*.tmp`` beside them, then a rename), mode 0600 in a 0700
directory.

- ``DIR/*.lp``: waiting. :func:`replay` sends them oldest first, deletes each one only after the
  store said 204, and stops at the first batch that could not be delivered (the store is down,
  slow, or refuses the token/org/bucket): that one and every later one stay.
- ``DIR/rejected/*.lp``: batches the store answered with a 4xx about their content (400, 413, …).
  Kept, reported, never sent again by themselves (``clusterkit telemetry replay --rejected``
  tries them once more, e.g. after a store upgrade).

Bound: at most ``max_bytes`` (default 256 MiB) in both together. Beyond it new batches are
refused (:class:`SpoolFull`) — dropping the oldest would be loss too, and silent. Where the
spool is: ``--spool-dir``, else ``$CLUSTERKIT_SPOOL_DIR``, else ``/var/spool/clusterkit`` for
root, else ``$XDG_STATE_HOME/clusterkit/spool`` (``~/.local/state/clusterkit/spool``).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Optional

from clusterkit.errors import ClusterkitError

if TYPE_CHECKING:
    from clusterkit.telemetry.sink import BatchResult, Writer

DEFAULT_MAX_BYTES = 256 * 1024 * 1024
SPOOL_DIR_ENV = "CLUSTERKIT_SPOOL_DIR"
REJECTED = "rejected"
SUFFIX = ".lp"
HEADER = "# clusterkit spool v1 precision=ms"
_NAME_RE = re.compile(r"^[0-9]{20}-[0-9]+-[0-9]+\.lp$")
_seq = itertools.count(1)


class SpoolError(ClusterkitError):
    """The spool cannot be written (or read): one line; the caller turns it into a warning and
    keeps the report."""

    exit_code = 3


class SpoolFull(SpoolError):
    """Keeping this batch would take the spool past its bound."""


def default_spool_dir(environ: Optional[Mapping[str, str]] = None) -> str:
    env = os.environ if environ is None else environ
    if env.get(SPOOL_DIR_ENV):
        return env[SPOOL_DIR_ENV]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        return "/var/spool/clusterkit"
    state = env.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return os.path.join(state, "clusterkit", "spool")


def _mib(n: int) -> str:
    return f"{n / (1024 * 1024):.1f} MiB"


def _why(e: OSError) -> str:
    return e.strerror or type(e).__name__


class Spool:
    """The spool in ``directory`` (created on the first :meth:`put`)."""

    def __init__(self, directory: Optional[str] = None, *, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.directory = os.path.abspath(directory or default_spool_dir())
        self.rejected_dir = os.path.join(self.directory, REJECTED)
        self.max_bytes = int(max_bytes)
        self._size: Optional[int] = None

    # ------------------------------------------------------------------ listing
    @staticmethod
    def _list(directory: str) -> list[str]:
        try:
            names = os.listdir(directory)
        except FileNotFoundError:
            return []
        except OSError as e:
            raise SpoolError(f"cannot read the spool {directory}: {_why(e)}") from None
        return [os.path.join(directory, n) for n in sorted(n for n in names if _NAME_RE.match(n))]

    def pending(self) -> list[str]:
        """Waiting batches, oldest first."""
        return self._list(self.directory)

    def rejected(self) -> list[str]:
        """Batches the store rejected, oldest first."""
        return self._list(self.rejected_dir)

    def size_bytes(self) -> int:
        """Bytes held by the spool's batches (waiting and rejected)."""
        if self._size is None:
            total = 0
            for path in self.pending() + self.rejected():
                try:
                    total += os.stat(path).st_size
                except OSError:
                    pass
            self._size = total
        return self._size

    def count_lines(self, paths: Optional[Sequence[str]] = None) -> int:
        """Points held in ``paths`` (default: every waiting batch)."""
        return sum(len(self.read(p)) for p in (self.pending() if paths is None else paths))

    # ------------------------------------------------------------------ writing
    def _make_dir(self, directory: str) -> None:
        try:
            os.makedirs(directory, mode=0o700, exist_ok=True)
        except OSError as e:
            raise SpoolError(f"cannot write the spool {self.directory}: {_why(e)}") from None
        if not os.path.isdir(directory):
            raise SpoolError(f"cannot write the spool {self.directory}: not a directory")

    def put(self, lines: Sequence[str], *, note: str = "", rejected: bool = False) -> str:
        """Keep one batch; its path. SpoolFull beyond the bound, SpoolError when it cannot be
        written."""
        from clusterkit.fsutil import write_atomic

        header = HEADER + f" lines={len(lines)}" + (f" note={' '.join(note.split())}" if note else "")
        text = header + "\n" + "\n".join(lines) + "\n"
        size = len(text.encode("utf-8"))
        directory = self.rejected_dir if rejected else self.directory
        self._make_dir(directory)
        used = self.size_bytes()
        if used + size > self.max_bytes:
            raise SpoolFull(f"spool {self.directory} is full ({_mib(used)} of {_mib(self.max_bytes)} used; "
                            f"this batch needs {_mib(size)})")
        name = f"{time.time_ns():020d}-{os.getpid()}-{next(_seq):06d}{SUFFIX}"
        path = os.path.join(directory, name)
        try:
            write_atomic(path, text, mode=0o600, prefix=".clusterkit-spool-")
        except OSError as e:
            raise SpoolError(f"cannot write the spool {self.directory}: {_why(e)}") from None
        self._size = used + size
        return path

    def read(self, path: str) -> list[str]:
        """The lines of one batch (comment lines left out). SpoolError when unreadable."""
        try:
            with open(path, encoding="utf-8", newline="") as fh:
                text = fh.read()
        except FileNotFoundError:
            return []
        except (OSError, UnicodeDecodeError) as e:
            why = _why(e) if isinstance(e, OSError) else "not UTF-8"
            raise SpoolError(f"cannot read spooled batch {path}: {why}") from None
        return [ln for ln in text.split("\n") if ln and not ln.startswith("#")]

    def remove(self, path: str) -> None:
        try:
            size = os.stat(path).st_size
            os.unlink(path)
        except FileNotFoundError:
            return
        except OSError as e:
            raise SpoolError(f"cannot delete spooled batch {path}: {_why(e)}") from None
        if self._size is not None:
            self._size = max(0, self._size - size)

    def move_to_rejected(self, path: str) -> str:
        self._make_dir(self.rejected_dir)
        target = os.path.join(self.rejected_dir, os.path.basename(path))
        try:
            os.replace(path, target)
        except OSError as e:
            raise SpoolError(f"cannot move spooled batch {path} to {self.rejected_dir}: {_why(e)}") from None
        return target

    @contextlib.contextmanager
    def locked(self) -> Iterator[bool]:
        """Hold the spool's replay lock (``DIR/.lock``); yields False when another process
        holds it (that one is replaying: this one leaves the spool alone) or the directory
        does not exist."""
        if not os.path.isdir(self.directory):
            yield False
            return
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX
            yield True
            return
        try:
            fd = os.open(os.path.join(self.directory, ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
        except OSError:
            yield True  # a read-only spool can still be replayed (its files cannot be deleted, though)
            return
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                yield False
                return
            try:
                yield True
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)


# ------------------------------------------------------------------------------ replay
@dataclass
class ReplayResult:
    #: batches and points delivered (and deleted from the spool)
    files: int = 0
    lines: int = 0
    #: batches the store rejected during this replay (moved to rejected/)
    rejected_files: int = 0
    rejected_lines: int = 0
    #: the store's answer to the last rejected batch ("HTTP 400: …")
    rejected_detail: str = ""
    #: batches still waiting when it stopped
    left: int = 0
    #: why it stopped early: the failed batch's result (None: everything went, or time ran out)
    stopped: Optional["BatchResult"] = None
    #: it stopped because the deadline came
    out_of_time: bool = False
    #: another process held the spool (it replays); nothing was done here
    busy: bool = False
    #: one-line problems with the spool itself (unreadable files, files that cannot be deleted)
    warnings: list[str] = field(default_factory=list)


def replay(spool: Spool, sink: "Writer", *, deadline: float, include_rejected: bool = False,
           clock: Callable[[], float] = time.monotonic) -> ReplayResult:
    """Send the spool's waiting batches oldest first (with ``include_rejected``, the rejected
    ones first, once). Each file is deleted only after the store took it; the first batch that
    could not be delivered stops the replay and stays, with everything after it. Never raises
    for store trouble; a spool problem becomes a warning line."""
    from clusterkit.telemetry.sink import Outcome

    result = ReplayResult()
    with spool.locked() as mine:
        if not mine:
            result.busy = os.path.isdir(spool.directory)
            return result
        try:
            queue = (spool.rejected() if include_rejected else []) + spool.pending()
        except SpoolError as e:
            result.warnings.append(str(e))
            return result
        for i, path in enumerate(queue):
            was_rejected = os.path.dirname(path) == spool.rejected_dir
            if clock() >= deadline:
                result.out_of_time = True
                result.left = sum(1 for p in queue[i:] if os.path.dirname(p) != spool.rejected_dir)
                break
            try:
                lines = spool.read(path)
            except SpoolError as e:
                result.warnings.append(str(e))
                if not was_rejected:
                    try:
                        spool.move_to_rejected(path)
                    except SpoolError as e2:
                        result.warnings.append(str(e2))
                continue
            if lines:
                r = sink.write("\n".join(lines), deadline=deadline)
            else:
                r = None
            if r is None or r.outcome is Outcome.WRITTEN:
                result.files += 1
                result.lines += len(lines)
                try:
                    spool.remove(path)
                except SpoolError as e:
                    # delivered but still there: it will be sent again (it overwrites itself); stop
                    # here rather than send every batch again on every run
                    result.warnings.append(f"{e} (it was delivered; replay stops until it can be deleted)")
                    result.left = sum(1 for p in queue[i:] if os.path.dirname(p) != spool.rejected_dir)
                    break
                continue
            if r.outcome is Outcome.REJECTED:
                result.rejected_files += 1
                result.rejected_lines += len(lines)
                if not was_rejected:
                    try:
                        spool.move_to_rejected(path)
                    except SpoolError as e:
                        result.warnings.append(str(e))
                result.rejected_detail = r.detail  # a rejected batch does not stop the replay
                continue
            result.stopped = r
            result.left = sum(1 for p in queue[i:] if os.path.dirname(p) != spool.rejected_dir)
            break
    return result
