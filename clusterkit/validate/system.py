"""System domain: host facts through the context's psutil (the real one, or the simulator's
stand-in with the same calls) and their judges.

Host memory and CPU counts differ between OEM builds of one SKU, so a node below the profile's
floor is ``warn`` unless the profile's ``system.floor_status`` is ``fail`` (a site profile that
pins its exact build).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional

from clusterkit.record import ConfigDict, Field, Record

from clusterkit.models import CheckResult, Status
from clusterkit.profiles import Profile
from clusterkit.validate.subjects import on_path

if TYPE_CHECKING:  # pragma: no cover
    from clusterkit.validate.context import ProbeContext

NAME = "system"
DOC = "host facts through psutil: memory, CPUs, load, free disk space, kernel"
CHECKS: dict[str, str] = {
    "system.facts": "host facts could not be read (error)",
    "system.memory": "host memory below the profile's floor (warn; fail with floor_status: fail)",
    "system.cpus": "logical CPUs below the profile's floor (warn; fail with floor_status: fail)",
    "system.load": "1-minute load per CPU above the profile's limit (warn)",
    "system.disk.free": "free space on the profile's paths (fail), or the path cannot be read (error)",
}

GIB = 1024**3


class PathUsage(Record):
    model_config = ConfigDict(extra="forbid")

    path: str
    total_gib: Optional[float] = None
    free_gib: Optional[float] = None
    error: Optional[str] = None


class SystemMeasurement(Record):
    model_config = ConfigDict(extra="forbid")

    cpus: Optional[int] = None
    memory_gib: Optional[float] = None
    load1: Optional[float] = None
    kernel: Optional[str] = None
    paths: list[PathUsage] = Field(default_factory=list)
    error: Optional[str] = None


def probe(ctx: "ProbeContext", profile: Optional[Profile] = None) -> SystemMeasurement:
    """Host facts for the paths the profile names. Never raises."""
    wanted = [r.path for r in profile.system.paths] if profile is not None else []
    m = SystemMeasurement()
    try:
        m.kernel = ctx.kernel_release()
    except Exception:  # noqa: BLE001 - an optional fact
        m.kernel = None
    try:
        ps = ctx.psutil()
        m.cpus = ps.cpu_count(logical=True)
        m.memory_gib = round(ps.virtual_memory().total / GIB, 1)
        m.load1 = round(ps.getloadavg()[0], 2)
    except Exception as e:  # noqa: BLE001 - psutil missing or /proc unreadable
        m.error = f"host facts unavailable: {type(e).__name__}: {e}"
        return m
    for path in wanted:
        try:
            du = ps.disk_usage(path)
            m.paths.append(PathUsage(path=path, total_gib=round(du.total / GIB, 2),
                                     free_gib=round(du.free / GIB, 2)))
        except OSError as e:
            m.paths.append(PathUsage(path=path, error=e.strerror or str(e)))
    return m


Measurement = SystemMeasurement


def judge(m: SystemMeasurement, profile: Profile) -> list[CheckResult]:
    p = profile.system
    out: list[CheckResult] = []
    if m.error:
        out.append(CheckResult(check="system.facts", status=Status.ERROR, message=m.error))
    below = Status.FAIL if getattr(p, "floor_status", "warn") == "fail" else Status.WARN
    build = "" if below is Status.FAIL else " (another build of this SKU? a site profile can make it a hard floor)"
    if p.memory_gib_min is not None and m.memory_gib is not None:
        ok = m.memory_gib >= p.memory_gib_min
        out.append(CheckResult(check="system.memory", status=Status.PASS if ok else below,
                               value=m.memory_gib, threshold=p.memory_gib_min, unit="GiB",
                               message=f"{m.memory_gib:g} GiB" +
                               ("" if ok else f", below {p.memory_gib_min:g} GiB{build}")))
    if p.cpus_min is not None and m.cpus is not None:
        ok = m.cpus >= p.cpus_min
        out.append(CheckResult(check="system.cpus", status=Status.PASS if ok else below, value=m.cpus,
                               threshold=p.cpus_min, unit="cpus",
                               message=f"{m.cpus} CPUs" + ("" if ok else f", below {p.cpus_min}{build}")))
    if p.load_per_cpu_warn is not None and m.load1 is not None and m.cpus:
        per = round(m.load1 / m.cpus, 3)
        ok = per < p.load_per_cpu_warn
        out.append(CheckResult(check="system.load", status=Status.PASS if ok else Status.WARN, value=per,
                               threshold=p.load_per_cpu_warn, unit="load/cpu",
                               message=f"load {m.load1:g} on {m.cpus} CPUs"))
    rules = {r.path: r for r in p.paths}
    for u in m.paths:
        r = rules.get(u.path)
        if u.error or u.free_gib is None:
            out.append(CheckResult(check="system.disk.free", **on_path(u.path), status=Status.ERROR,
                                   message=f"cannot stat {u.path}: {u.error}"))
            continue
        status, why = Status.PASS, f"{u.free_gib:g} GiB free of {u.total_gib:g} GiB"
        if r is not None and r.free_gib_min is not None and u.free_gib < r.free_gib_min:
            status, why = Status.FAIL, f"only {u.free_gib:g} GiB free, below {r.free_gib_min:g} GiB"
        elif r is not None and r.free_pct_min is not None and u.total_gib:
            pct = 100.0 * u.free_gib / u.total_gib
            if pct < r.free_pct_min:
                status, why = Status.FAIL, f"only {pct:.1f}% free, below {r.free_pct_min:g}%"
        out.append(CheckResult(check="system.disk.free", **on_path(u.path), status=status, value=u.free_gib,
                               threshold=r.free_gib_min if r else None, unit="GiB", message=why))
    return out


def facts(m: SystemMeasurement) -> dict[str, Any]:
    return {"kernel": m.kernel} if m.kernel else {}
