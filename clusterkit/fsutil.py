"""Small file helpers shared by every writer of a file a person or a tool reads later."""

from __future__ import annotations

import json
import os
import sys
import tempfile
from typing import Any, Optional


def write_atomic(path: str, text: str, *, mode: int = 0o644, prefix: str = ".clusterkit-",
                 fsync: bool = False) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same directory and a rename,
    so a reader never sees half a file. Raises OSError."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as fh:
            fh.write(text)
            if fsync:
                fh.flush()
                os.fsync(fh.fileno())
        os.chmod(tmp, mode)  # mkstemp makes it 0600
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def emit_text(text: str, out: Optional[str], option: str = "-o") -> None:
    """A rendered file: to stdout, or written atomically to ``out`` (OutputError, one line, when
    it cannot be)."""
    if out is None:
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    try:
        write_atomic(out, text)
    except OSError as e:
        from clusterkit.errors import OutputError

        raise OutputError(f"{option} {out}: cannot write: {e.strerror or e}") from None


def last_json_object(text: str) -> Optional[dict[str, Any]]:
    """The last line of ``text`` that starts with ``{``, as a JSON object; None when that line
    is not one. Login banners or shell noise before it do not matter."""
    for line in reversed(text.splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                doc = json.loads(line)
            except ValueError:
                return None
            return doc if isinstance(doc, dict) else None
    return None


def publish_dir(tmp: str, path: str, mark: str = ".complete") -> None:
    """Move the finished directory ``tmp`` (holding the file ``mark``) to ``path`` in one
    rename. When another process published it first (same content: keyed by what it holds),
    theirs is kept; a stale one without ``mark`` is replaced. ``tmp`` is removed either way."""
    import shutil

    try:
        try:
            os.rename(tmp, path)
        except OSError:
            if not os.path.isfile(os.path.join(path, mark)):
                shutil.rmtree(path, ignore_errors=True)
                os.rename(tmp, path)
    finally:
        if os.path.isdir(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
