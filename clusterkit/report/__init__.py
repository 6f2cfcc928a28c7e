"""Report sinks: every output renders from one FleetReport (schema clusterkit.report/v1).

- ``json``: ``FleetReport.to_json()``, the document of record (docs/reports.md);
- ``terminal``: :func:`clusterkit.report.terminal.render_terminal`, for people;
- ``junit``: :func:`clusterkit.report.junit.render_junit`, for CI;
- ``html``: :func:`clusterkit.report.html.render_html`, one self-contained page for a browser.

Each sink is imported only when it is used.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Optional

if TYPE_CHECKING:  # pragma: no cover
    from clusterkit.models import FleetReport

FORMATS = ("json", "junit", "terminal", "html")


def render(report: "FleetReport", fmt: str) -> str:
    """The text of ``report`` in format ``fmt`` (one of FORMATS; terminal output is plain)."""
    if fmt == "json":
        return report.to_json() + "\n"
    if fmt == "junit":
        from clusterkit.report.junit import render_junit

        return render_junit(report)
    if fmt == "terminal":
        from clusterkit.report.terminal import render_terminal

        return render_terminal(report, color=False)
    if fmt == "html":
        from clusterkit.report.html import render_html

        return render_html(report)
    from clusterkit.errors import UsageError

    raise UsageError(f"unknown report format {fmt!r}; one of: {', '.join(FORMATS)}")


def write_report(report: "FleetReport", fmt: str, path: Optional[str] = None) -> str:
    """Render ``report`` as ``fmt`` and, when ``path`` is given, write it there atomically
    (a temporary file in the same directory, then a rename). Returns the text."""
    text = render(report, fmt)
    if path is None:
        return text
    if os.path.exists(path) and not os.path.isfile(path):
        # /dev/null, /dev/stdout, a FIFO: write in place, never rename over a device node
        try:
            with open(path, "w", encoding="utf-8", newline="\n") as fh:
                fh.write(text)
        except OSError as e:
            from clusterkit.errors import UsageError

            raise UsageError(f"cannot write report {path}: {e.strerror or e}") from None
        return text
    from clusterkit.fsutil import write_atomic

    try:
        write_atomic(path, text, prefix=".clusterkit-report-")
    except OSError as e:
        from clusterkit.errors import UsageError

        raise UsageError(f"cannot write report {path}: {e.strerror or e}") from None
    return text
