"""``clusterkit deploy agent``: put clusterkit itself onto the nodes, offline, over SSH/SFTP.

What happens on each node (docs/commands/deploy-agent.md has the user's view):

1. **Ask** (one ``<python> -c`` round trip): Python version and implementation, machine, libc and
   its version, the installed id (``<prefix>/current`` → ``versions/<id>``) and what
   ``<prefix>/current/bin/clusterkit --version`` answers, the wheels and versions already there,
   whether the login user may write where it must, and the state of the requested extras.
2. **Wheelhouse**: nodes are grouped by (Python X.Y, implementation, machine, libc + version); per
   group the controller builds (or takes from its cache) clusterkit's wheel plus binary wheels of
   its dependencies *for that platform* (``pip download --only-binary=:all: --platform …
   --python-version …``), and a pip wheel to install with. ``--wheelhouse DIR`` takes a prepared
   one instead. Nothing is ever fetched on the node.
3. **Decide**: unchanged when ``current`` is the wheelhouse's id *and* its ``clusterkit --version``
   answers the wheelhouse's version — no upload then. Otherwise:
4. **Upload** the wheels the node lacks (name and size) over SFTP into ``<prefix>/wheels``
   (each to a temporary name, then renamed), and **install** beside the old version:
   ``<python> -m venv <prefix>/versions/<id>``, ``pip install --no-index --find-links
   <prefix>/wheels <clusterkit wheel>``, check ``clusterkit --version``, mark the version
   complete, then switch ``<prefix>/current`` with one ``rename(2)`` of a new symlink and link
   ``<bin-dir>/clusterkit`` the same way. A node that dies before the switch keeps its old
   version; a half-made version directory (no completion mark) is made again next time. The last
   ``--keep`` older versions stay, older ones and unused wheels are removed.
5. **Extras**, on request: the Telegraf config file, the HealthCheckProgram wrapper (both written
   to a temporary name and renamed, only when their content differs), the state directory (made,
   and given its owner).

Transport: one fabric :class:`fabric.Connection` per node (``put``, ``run``, ``sudo``). Hosts are
resolved by :mod:`clusterkit.transport.sshconfig` (the same ssh_config reading as the paramiko
transport: Include, Match, HostKeyAlias, ProxyJump as a fabric gateway, ProxyCommand) and fabric
reads no ssh_config of its own. Host keys: fabric installs ``AutoAddPolicy`` and reads no
known_hosts; every connection here replaces it with :class:`StrictHostKeys`, which checks the
server key against the known_hosts files with :mod:`clusterkit.transport.knownhosts` (hashed
names, ``[host]:port``, HostKeyAlias, ``@revoked``) and refuses anything else — an unknown,
changed or revoked key, or a host covered only by ``@cert-authority`` (paramiko cannot check host
certificates) — with one reason. Nothing is ever added to known_hosts.
"""

from __future__ import annotations

import base64
import hashlib
import importlib
import importlib.metadata
import io
import json
import os
import re
import shlex
import shutil
import sys
import tempfile
import threading
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence

from clusterkit.errors import ClusterkitError, ConfigError, HostKeyError
from clusterkit.fsutil import last_json_object, publish_dir
from clusterkit.models import Node

SCHEMA = "clusterkit.deploy-agent/v1"
DEFAULT_PREFIX = "/opt/clusterkit"
DEFAULT_PYTHON = "/usr/bin/python3"
DEFAULT_BIN_DIR = "/usr/local/bin"
DEFAULT_TELEGRAF_PATH = "/etc/telegraf/telegraf.d/clusterkit.conf"
DEFAULT_HEALTHCHECK_PATH = "/usr/local/sbin/clusterkit-healthcheck"
DEFAULT_KEEP = 2
DEFAULT_FANOUT = 32
COMPLETE_MARK = ".clusterkit-complete"
PIP_LOG = ".clusterkit-pip.log"
NODE_TOKEN = "{node}"

CHANGED, UNCHANGED, FAILED = "changed", "unchanged", "failed"

_WHEEL_RE = re.compile(r"^(?P<name>[A-Za-z0-9_.]+)-(?P<version>[^-]+)(-\d[^-]*)?-[^-]+-[^-]+-[^-]+\.whl$")
_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")


class WheelhouseError(ClusterkitError):
    """A wheelhouse could not be built or used (the nodes that need it fail with this reason)."""

    exit_code = 1


class StepError(Exception):
    """One step on one node failed: the node's reason."""


# ----------------------------------------------------------------------------- pure helpers
def expand_node(path: str, node: str) -> str:
    """``{node}`` in a remote path becomes the node's name (nodes sharing one filesystem)."""
    return path.replace(NODE_TOKEN, node)


def parse_wheel_filename(name: str) -> Optional[tuple[str, str]]:
    """``(normalized project name, version)`` of a wheel file name, or None."""
    m = _WHEEL_RE.match(name)
    if m is None:
        return None
    return re.sub(r"[-_.]+", "-", m.group("name")).lower(), m.group("version")


def _project(name: str) -> str:
    """The normalized project of a wheel file name ("" for a name that is not a wheel's)."""
    parsed = parse_wheel_filename(name)
    return parsed[0] if parsed is not None else ""


def human_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"  # pragma: no cover


@dataclass(frozen=True)
class Platform:
    """What decides which binary wheels a node can install."""

    python: str  # "3.11"
    implementation: str = "cp"  # cp, pp
    machine: str = "x86_64"
    libc: str = "glibc"  # glibc, musl, or "" (unknown)
    libc_version: str = ""  # "2.36"

    @classmethod
    def from_facts(cls, facts: Mapping[str, Any]) -> Platform:
        impl = {"cpython": "cp", "pypy": "pp"}.get(str(facts.get("impl", "cpython")), str(facts.get("impl")))
        return cls(python=str(facts["python"]), implementation=impl, machine=str(facts.get("machine") or ""),
                   libc=str(facts.get("libc") or ""), libc_version=str(facts.get("libc_version") or ""))

    @property
    def label(self) -> str:
        libc = f"{self.libc} {self.libc_version}".strip() or "unknown libc"
        return f"{self.implementation}{self.python.replace('.', '')} {self.machine} {libc}"

    @property
    def key(self) -> str:
        return f"{self.implementation}{self.python}-{self.machine}-{self.libc}{self.libc_version}"

    def pip_platforms(self) -> list[str]:
        """``--platform`` tags for ``pip download``, newest first: every manylinux (or musllinux)
        level the node's libc supports, the legacy aliases, and the generic ``linux_<arch>``."""
        arch = self.machine
        tags: list[str] = []
        major, minor = _version_pair(self.libc_version)
        if self.libc == "glibc" and major == 2:
            for m in range(minor, 4, -1):
                tags.append(f"manylinux_2_{m}_{arch}")
            legacy = {17: "manylinux2014", 12: "manylinux2010", 5: "manylinux1"}
            for m, alias in legacy.items():
                if minor >= m:
                    tags.append(f"{alias}_{arch}")
        elif self.libc == "musl" and major == 1:
            for m in range(minor, -1, -1):
                tags.append(f"musllinux_1_{m}_{arch}")
        tags.append(f"linux_{arch}")
        return tags


def _version_pair(text: str) -> tuple[int, int]:
    parts = re.findall(r"\d+", text or "")
    if len(parts) < 2:
        return 0, 0
    return int(parts[0]), int(parts[1])


def healthcheck_wrapper_text(prefix: str, args: Sequence[str] = ()) -> str:
    """The POSIX sh script slurmd runs as ``HealthCheckProgram``: it sets a PATH (slurmd gives
    none) and execs ``<prefix>/current/bin/clusterkit node-check --healthcheck`` with ``args``
    and its own arguments. Pure: the Ansible role gets the same text from
    ``clusterkit deploy agent --print-healthcheck-wrapper --prefix P``."""
    exe = shlex.quote(prefix.rstrip("/") + "/current/bin/clusterkit") if prefix.rstrip("/") else \
        shlex.quote("/current/bin/clusterkit")
    extra = "".join(" " + shlex.quote(a) for a in args)
    return (
        "#!/bin/sh\n"
        "# clusterkit-healthcheck: Slurm's HealthCheckProgram (written by clusterkit deploy agent).\n"
        "# slurmd runs it as root, with no arguments and no PATH, and kills it after 60 s.\n"
        "PATH=/usr/sbin:/usr/bin:/sbin:/bin\n"
        "export PATH\n"
        f"exec {exe} node-check --healthcheck{extra} \"$@\"\n"
    )


# ----------------------------------------------------------------------------- wheelhouse
@dataclass(frozen=True)
class WheelFile:
    name: str
    path: Path
    size: int
    sha256: str


@dataclass
class Wheelhouse:
    """The wheels one group of nodes installs from."""

    files: list[WheelFile]
    version: str  # clusterkit's version
    digest: str  # over every file's name and content
    origin: str  # "built" / "cache" / "dir:<path>"
    platform: Optional[Platform] = None

    @property
    def id(self) -> str:
        return f"{self.version}-{self.digest[:12]}"

    @property
    def clusterkit_wheel(self) -> WheelFile:
        return next(f for f in self.files if _project(f.name) == "clusterkit")

    @property
    def pip_wheel(self) -> Optional[WheelFile]:
        return next((f for f in self.files if _project(f.name) == "pip"), None)

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)

    def summary(self) -> dict[str, Any]:
        return {"id": self.id, "version": self.version, "platform": self.platform.label if self.platform else None,
                "origin": self.origin, "files": len(self.files), "bytes": self.total_bytes}


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def wheelhouse_from_files(paths: Sequence[Path], origin: str, platform: Optional[Platform] = None) -> Wheelhouse:
    """A Wheelhouse over these wheel files: exactly one clusterkit wheel, else WheelhouseError."""
    files = sorted((WheelFile(p.name, p, p.stat().st_size, _sha256_file(p)) for p in paths), key=lambda f: f.name)
    ck = [f for f in files if _project(f.name) == "clusterkit"]
    if len(ck) != 1:
        what = "no clusterkit wheel" if not ck else f"{len(ck)} clusterkit wheels ({', '.join(f.name for f in ck)})"
        raise WheelhouseError(f"wheelhouse {origin}: {what}; it needs exactly one")
    names = [f.name for f in files]
    if len(set(names)) != len(names):
        raise WheelhouseError(f"wheelhouse {origin}: the same wheel name twice")
    version = (parse_wheel_filename(ck[0].name) or ("", ""))[1]
    digest = hashlib.sha256("".join(f"{f.name}\0{f.sha256}\n" for f in files).encode()).hexdigest()
    wh = Wheelhouse(files, version, digest, origin, platform)
    if not _ID_RE.match(wh.id):
        raise WheelhouseError(f"wheelhouse {origin}: clusterkit version {version!r} cannot name a directory")
    return wh


def load_wheelhouse_dir(path: str) -> Wheelhouse:
    """``--wheelhouse DIR``: every ``*.whl`` in it (UsageError when it is not a usable one)."""
    from clusterkit.errors import UsageError

    d = Path(path)
    if not d.is_dir():
        raise UsageError(f"--wheelhouse {path}: not a directory")
    wheels = sorted(p for p in d.iterdir() if p.name.endswith(".whl") and p.is_file())
    try:
        return wheelhouse_from_files(wheels, f"dir:{d}")
    except WheelhouseError as e:
        raise UsageError(f"--wheelhouse {path}: {e.message.split(': ', 1)[-1]}") from None


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "clusterkit"


def clusterkit_source() -> Optional[Path]:
    """The source checkout this clusterkit runs from (pyproject.toml naming clusterkit), or None."""
    import clusterkit

    root = Path(clusterkit.__file__).resolve().parent.parent
    pyproject = root / "pyproject.toml"
    try:
        text = pyproject.read_text(encoding="utf-8")
    except OSError:
        return None
    return root if re.search(r'(?m)^name\s*=\s*"clusterkit"', text) else None


def source_digest(root: Path) -> str:
    """sha256 over the top-level project files and every file under clusterkit/ (caches and bytecode
    left out)."""
    h = hashlib.sha256()
    files = [root / name for name in _SOURCE_TOP]
    for dirpath, dirnames, filenames in os.walk(root / "clusterkit"):
        dirnames[:] = sorted(d for d in dirnames if d != "__pycache__" and not d.startswith("."))
        files += [Path(dirpath) / f for f in sorted(filenames) if not f.endswith((".pyc", ".pyo"))]
    for p in files:
        if p.is_file():
            h.update(p.relative_to(root).as_posix().encode() + b"\0")
            h.update(p.read_bytes())
            h.update(b"\0")
    return h.hexdigest()


_SOURCE_TOP = ("pyproject.toml", "setup.cfg", "setup.py", "MANIFEST.in", "README.md", "README.rst", "LICENSE",
               "LICENSE.txt")


def copy_source(root: Path, dest: Path) -> None:
    """What a build of clusterkit reads: the top-level project files and clusterkit/ (no caches)."""
    for name in _SOURCE_TOP:
        if (root / name).is_file():
            shutil.copy2(root / name, dest / name)
    shutil.copytree(root / "clusterkit", dest / "clusterkit",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.pyo", ".*"))


def node_requirements(source: Optional[Path] = None) -> list[str]:
    """clusterkit's ``[project.dependencies]`` (no extras): from the checkout's pyproject.toml
    when there is one and tomllib reads it, else from the installed metadata."""
    if source is not None:
        try:
            tomllib = importlib.import_module("tomllib")  # Python 3.11+; else the metadata below
            data = tomllib.loads((source / "pyproject.toml").read_text(encoding="utf-8"))
            return [str(r) for r in data["project"]["dependencies"]]
        except (ImportError, OSError, KeyError, ValueError):
            pass
    reqs = importlib.metadata.requires("clusterkit") or []
    return [r for r in reqs if "extra ==" not in r and "extra==" not in r]


def _run_pip(argv: list[str], what: str, timeout: float = 900) -> None:
    from clusterkit.procs import ProcessGroup

    env = dict(os.environ, PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_INPUT="1")
    try:  # its own process group: a timeout ends the build backends pip started too
        cp = ProcessGroup().run([sys.executable, "-m", "pip", *argv], timeout=timeout, env=env)
    except OSError as e:
        raise WheelhouseError(f"{what}: cannot run pip: {e.strerror or e}") from None
    if cp.timed_out:
        raise WheelhouseError(f"{what}: pip did not finish within {timeout:g}s")
    if cp.rc != 0:
        lines = [ln for ln in cp.stderr.splitlines() if ln.strip() and not ln.startswith("WARNING")]
        errors = [ln for ln in lines if ln.startswith("ERROR")]
        raise WheelhouseError(f"{what}: pip failed: {(errors or lines or ['exit ' + str(cp.rc)])[0]}")


def repack_installed_clusterkit(dest: Path) -> Path:
    """clusterkit's wheel rebuilt from the installed distribution (no source checkout at hand):
    its files (bytecode left out) and dist-info, with a fresh RECORD."""
    dist = importlib.metadata.distribution("clusterkit")
    version = dist.version
    info_dir = f"clusterkit-{version}.dist-info"
    out = dest / f"clusterkit-{version}-py3-none-any.whl"
    records: list[str] = []
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        for f in sorted(dist.files or [], key=str):
            arc = str(f)
            if arc.startswith("..") or "__pycache__" in arc or arc.endswith((".pyc", ".pyo")):
                continue
            if arc.split("/")[0].endswith(".dist-info") and arc.rsplit("/", 1)[-1] in (
                    "RECORD", "INSTALLER", "REQUESTED", "direct_url.json"):
                continue
            data = Path(str(f.locate())).read_bytes()
            if arc.split("/")[0].endswith(".dist-info"):
                arc = f"{info_dir}/{arc.split('/', 1)[1]}"
            zf.writestr(arc, data)
            b64 = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            records.append(f"{arc},sha256={b64},{len(data)}")
        records.append(f"{info_dir}/RECORD,,")
        zf.writestr(f"{info_dir}/RECORD", "\n".join(records) + "\n")
    return out


class WheelhouseBuilder:
    """Builds (once per platform, cached on disk) the wheelhouse of a group of nodes.

    Cache layout under ``cache_dir/wheelhouse``: ``clusterkit-<source digest>/`` (clusterkit's
    wheel, built with ``pip wheel --no-deps`` from the checkout, or repacked from the installed
    distribution) and ``deps-<key>/`` (``pip download --only-binary=:all:`` of the node-side
    dependencies and pip for one platform; the key covers the requirement list and platform).
    A directory is complete when it holds ``.complete``; it is built in a temporary directory
    beside it and renamed into place."""

    def __init__(self, cache_dir: Optional[Path] = None, source: Optional[Path] = None,
                 log: Callable[[str], None] = lambda _m: None) -> None:
        self.cache = Path(cache_dir or default_cache_dir()) / "wheelhouse"
        self.source = source if source is not None else clusterkit_source()
        self.log = log
        self._lock = threading.Lock()
        self._locks: dict[str, threading.Lock] = {}
        self._done: dict[str, Wheelhouse | WheelhouseError] = {}

    def _key_lock(self, key: str) -> threading.Lock:
        with self._lock:
            return self._locks.setdefault(key, threading.Lock())

    def _cached(self, name: str, build: Callable[[Path], None]) -> tuple[Path, bool]:
        final = self.cache / name
        if (final / ".complete").exists():
            return final, True
        self.cache.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=self.cache))
        try:
            build(tmp)
            (tmp / ".complete").write_text("")
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        publish_dir(str(tmp), str(final))  # another process's, when it made it first
        return final, False

    def clusterkit_wheel(self) -> tuple[Path, bool]:
        if self.source is not None:
            digest = source_digest(self.source)[:20]
            src = self.source

            def build(tmp: Path) -> None:
                self.log(f"building clusterkit's wheel from {src}")
                with tempfile.TemporaryDirectory(prefix="clusterkit-src-") as copy:
                    copy_source(src, Path(copy))  # the build writes build/ and *.egg-info: not into the checkout
                    _run_pip(["wheel", "--no-deps", "--quiet", "--wheel-dir", str(tmp), copy], "clusterkit wheel")
        else:
            dist = importlib.metadata.distribution("clusterkit")
            digest = hashlib.sha256((dist.read_text("RECORD") or dist.version).encode()).hexdigest()[:20]

            def build(tmp: Path) -> None:
                self.log("repacking the installed clusterkit as a wheel")
                repack_installed_clusterkit(tmp)
        d, hit = self._cached(f"clusterkit-{digest}", build)
        wheels = [p for p in d.iterdir() if p.name.startswith("clusterkit-") and p.name.endswith(".whl")]
        if len(wheels) != 1:
            raise WheelhouseError(f"clusterkit wheel cache {d}: expected one wheel, found {len(wheels)}")
        return wheels[0], hit

    def deps(self, platform: Platform) -> tuple[list[Path], bool]:
        reqs = node_requirements(self.source) + ["pip"]
        key = hashlib.sha256(json.dumps([reqs, platform.key, platform.pip_platforms()]).encode()).hexdigest()[:20]

        def build(tmp: Path) -> None:
            self.log(f"downloading dependency wheels for {platform.label}")
            argv = ["download", "--quiet", "--only-binary=:all:", "--dest", str(tmp),
                    "--python-version", platform.python, "--implementation", platform.implementation]
            for tag in platform.pip_platforms():
                argv += ["--platform", tag]
            _run_pip(argv + reqs, f"dependency wheels for {platform.label}")
        d, hit = self._cached(f"deps-{key}", build)
        return sorted(p for p in d.iterdir() if p.name.endswith(".whl")), hit

    def get(self, platform: Platform) -> Wheelhouse:
        """The wheelhouse for ``platform`` (built at most once per process; errors remembered)."""
        with self._key_lock(platform.key):
            got = self._done.get(platform.key)
            if got is None:
                try:
                    ck, ck_hit = self.clusterkit_wheel()
                    deps, deps_hit = self.deps(platform)
                    deps = [p for p in deps if (parse_wheel_filename(p.name) or ("",))[0] != "clusterkit"]
                    got = wheelhouse_from_files([ck, *deps], "cache" if ck_hit and deps_hit else "built", platform)
                except WheelhouseError as e:
                    got = e
                except OSError as e:
                    got = WheelhouseError(f"wheelhouse for {platform.label}: {e.strerror or e}")
                self._done[platform.key] = got
        if isinstance(got, WheelhouseError):
            raise got
        return got


# ----------------------------------------------------------------------------- node facts
PROBE = r"""
import hashlib, json, os, platform, pwd, subprocess, sys
a = json.loads(sys.argv[1])
o = {"python": "%d.%d" % sys.version_info[:2], "python_full": platform.python_version(),
     "impl": sys.implementation.name, "machine": platform.machine()}
libc, ver = platform.libc_ver()
if not libc:
    import glob
    if glob.glob("/lib/ld-musl-*"):
        libc = "musl"
        try:
            r = subprocess.run(glob.glob("/lib/ld-musl-*")[:1], capture_output=True, text=True, timeout=5)
            ver = [w for w in r.stderr.split() if w[:1].isdigit()][0]
        except Exception:
            ver = ""
o["libc"] = libc
o["libc_version"] = ver
o["user"] = pwd.getpwuid(os.geteuid()).pw_name
p = a["prefix"]
cur = os.path.join(p, "current")
try:
    o["current"] = os.path.basename(os.readlink(cur).rstrip("/"))
except OSError:
    o["current"] = None
o["current_version"] = None
exe = os.path.join(cur, "bin", "clusterkit")
if o["current"] and os.access(exe, os.X_OK):
    try:
        r = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
        if r.returncode == 0 and r.stdout.strip():
            o["current_version"] = r.stdout.split()[-1]
    except Exception:
        pass
vers = {}
try:
    for n in os.listdir(os.path.join(p, "versions")):
        d = os.path.join(p, "versions", n)
        vers[n] = [os.lstat(d).st_mtime, os.path.exists(os.path.join(d, a["mark"]))]
except OSError:
    pass
o["versions"] = vers
wh = {}
try:
    for n in os.listdir(os.path.join(p, "wheels")):
        if n.endswith(".whl"):
            wh[n] = os.path.getsize(os.path.join(p, "wheels", n))
except OSError:
    pass
o["wheels"] = wh
def blocker(path):
    d = os.path.abspath(path)
    while not os.path.lexists(d) and d != "/":
        d = os.path.dirname(d)
    if os.path.isdir(d) and os.access(d, os.W_OK | os.X_OK):
        return None
    try:
        owner = pwd.getpwuid(os.stat(d).st_uid).pw_name
    except Exception:
        owner = "?"
    return "%s (owner %s)" % (d, owner)
o["blocked"] = {w: blocker(w) for w in a["writable"]}
fs = {}
for f in a["files"]:
    try:
        with open(f, "rb") as fh:
            fs[f] = hashlib.sha256(fh.read()).hexdigest()
    except OSError:
        fs[f] = None
o["files"] = fs
ds = {}
for d in a["dirs"]:
    try:
        st = os.stat(d)
        try:
            owner = pwd.getpwuid(st.st_uid).pw_name
        except KeyError:
            owner = str(st.st_uid)
        ds[d] = {"isdir": os.path.isdir(d), "owner": owner}
    except OSError:
        ds[d] = None
o["dirs"] = ds
print(json.dumps(o))
"""


@dataclass
class NodeFacts:
    """What the probe found on one node."""

    platform: Platform
    python_full: str = ""
    user: str = ""
    current: Optional[str] = None
    current_version: Optional[str] = None
    versions: dict[str, tuple[float, bool]] = field(default_factory=dict)  # id -> (mtime, complete)
    wheels: dict[str, int] = field(default_factory=dict)  # name -> size
    blocked: dict[str, Optional[str]] = field(default_factory=dict)  # path -> the dir that stops us
    files: dict[str, Optional[str]] = field(default_factory=dict)  # path -> sha256
    dirs: dict[str, Optional[dict[str, Any]]] = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> NodeFacts:
        return cls(platform=Platform.from_facts(data), python_full=str(data.get("python_full", "")),
                   user=str(data.get("user", "")), current=data.get("current"),
                   current_version=data.get("current_version"),
                   versions={k: (float(v[0]), bool(v[1])) for k, v in (data.get("versions") or {}).items()},
                   wheels={k: int(v) for k, v in (data.get("wheels") or {}).items()},
                   blocked=dict(data.get("blocked") or {}), files=dict(data.get("files") or {}),
                   dirs=dict(data.get("dirs") or {}))


# ----------------------------------------------------------------------------- planning (pure)
@dataclass(frozen=True)
class Extra:
    """A file pushed beside the agent (Telegraf config, HealthCheckProgram wrapper)."""

    kind: str  # "telegraf config", "healthcheck wrapper"
    path: str  # may hold {node}
    content: bytes
    mode: int
    #: the content for one node's expanded prefix (the wrapper names <prefix>/current)
    per_prefix: Optional[Callable[[str], bytes]] = None

    def for_prefix(self, prefix: str) -> Extra:
        if self.per_prefix is None:
            return self
        return Extra(self.kind, self.path, self.per_prefix(prefix), self.mode)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.content).hexdigest()


@dataclass
class Options:
    prefix: str = DEFAULT_PREFIX
    python: str = DEFAULT_PYTHON
    bin_dir: str = DEFAULT_BIN_DIR
    keep: int = DEFAULT_KEEP
    sudo: bool = False
    dry_run: bool = False
    extras: tuple[Extra, ...] = ()
    state_dir: Optional[str] = None
    state_owner: Optional[str] = None
    timeout: float = 900.0  # one remote step (pip install included)

    def for_node(self, node: str) -> NodePaths:
        prefix = expand_node(self.prefix, node).rstrip("/") or "/"
        return NodePaths(prefix=prefix, bin_dir=expand_node(self.bin_dir, node).rstrip("/") or "/",
                         extras=tuple((e.for_prefix(prefix), expand_node(e.path, node)) for e in self.extras),
                         state_dir=expand_node(self.state_dir, node) if self.state_dir else None)


@dataclass(frozen=True)
class NodePaths:
    prefix: str
    bin_dir: str
    extras: tuple[tuple[Extra, str], ...]
    state_dir: Optional[str]

    def probe_args(self, sudo: bool) -> dict[str, Any]:
        writable = [] if sudo else [self.prefix, self.bin_dir] + [os.path.dirname(p) for _, p in self.extras] + \
            ([self.state_dir] if self.state_dir else [])
        return {"prefix": self.prefix, "mark": COMPLETE_MARK, "writable": writable,
                "files": [p for _, p in self.extras], "dirs": [self.state_dir] if self.state_dir else []}


def is_unchanged(facts: NodeFacts, wh: Wheelhouse) -> bool:
    """The idempotency key: ``current`` is this wheelhouse's id and answers its version."""
    return facts.current == wh.id and facts.current_version == wh.version


def wheels_to_upload(on_node: Mapping[str, int], wh: Wheelhouse) -> list[WheelFile]:
    """Wheels the node lacks (same name and size counts as present), clusterkit's always: two
    builds of one version share a file name."""
    out = []
    for f in wh.files:
        is_ck = _project(f.name) == "clusterkit"
        if is_ck or on_node.get(f.name) != f.size:
            out.append(f)
    return out


def wheels_to_remove(on_node: Mapping[str, int], wh: Wheelhouse) -> list[str]:
    """Wheels on the node this wheelhouse does not hold (removed after a successful switch)."""
    keep = {f.name for f in wh.files}
    return sorted(n for n in on_node if n not in keep)


def versions_to_remove(versions: Mapping[str, tuple[float, bool]], *, new_id: str, old_id: Optional[str],
                       keep: int) -> list[str]:
    """Version directories to delete after switching to ``new_id``: incomplete ones (never
    the new one), and complete ones beyond the ``keep`` newest older versions (the one that was
    current is always among those kept when keep >= 1)."""
    older = [(v, mt) for v, (mt, complete) in versions.items() if v != new_id and complete]
    older.sort(key=lambda x: (x[0] != old_id, -x[1]))  # the old current first, then newest first
    kept = {v for v, _ in older[:max(0, keep)]}
    return sorted(v for v in versions if v != new_id and v not in kept)


@dataclass
class NodeResult:
    node: str
    status: str = FAILED
    reason: str = ""
    old_id: Optional[str] = None
    old_version: Optional[str] = None
    new_id: Optional[str] = None
    new_version: Optional[str] = None
    platform: Optional[str] = None
    actions: list[str] = field(default_factory=list)
    uploaded_files: int = 0
    uploaded_bytes: int = 0
    duration_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["duration_s"] = round(self.duration_s, 3)
        return d


@dataclass
class DeployReport:
    results: list[NodeResult]
    dry_run: bool = False
    prefix: str = DEFAULT_PREFIX
    wheelhouses: list[Wheelhouse] = field(default_factory=list)
    skipped: list[dict[str, Any]] = field(default_factory=list)
    duration_s: float = 0.0

    def counts(self) -> dict[str, int]:
        c = {CHANGED: 0, UNCHANGED: 0, FAILED: 0}
        for r in self.results:
            c[r.status] = c.get(r.status, 0) + 1
        return c

    @property
    def exit_code(self) -> int:
        return 1 if any(r.status == FAILED for r in self.results) else 0

    def to_json(self) -> str:
        doc = {
            "schema": SCHEMA, "dry_run": self.dry_run, "prefix": self.prefix,
            "summary": {**self.counts(), "nodes": len(self.results), "skipped": len(self.skipped),
                        "duration_s": round(self.duration_s, 3)},
            "wheelhouses": [w.summary() for w in self.wheelhouses],
            "nodes": [r.to_dict() for r in self.results],
            "skipped": self.skipped,
        }
        return json.dumps(doc, indent=2)

    def table(self) -> str:
        """The terminal table: one line per node, failures with their reason."""
        label = {CHANGED: "would change" if self.dry_run else "changed", UNCHANGED: "unchanged", FAILED: "failed"}
        rows = [("NODE", "STATUS", "BEFORE", "AFTER", "DETAIL")]
        for r in sorted(self.results, key=lambda r: (r.status != FAILED, r.node)):
            detail = r.reason if r.status == FAILED else "; ".join(r.actions)
            rows.append((r.node, label.get(r.status, r.status), r.old_id or "-", r.new_id or "-", detail or "-"))
        widths = [max(len(row[i]) for row in rows) for i in range(4)]
        lines = ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row[:4])) + "  " + row[4] for row in rows]
        c = self.counts()
        tail = f"{c[CHANGED]} {'to change' if self.dry_run else 'changed'}, {c[UNCHANGED]} unchanged, " \
               f"{c[FAILED]} failed"
        if self.skipped:
            tail += f", {len(self.skipped)} skipped ({', '.join(s['node'] for s in self.skipped[:5])})"
        tail += f" in {self.duration_s:.1f}s" + (" (dry run: nothing was changed)" if self.dry_run else "")
        return "\n".join(lines + [tail])


# ----------------------------------------------------------------------------- remote scripts
def _q(s: str) -> str:
    return shlex.quote(s)


def _replace_cmd(python: str, src: str, dst: str) -> str:
    """An atomic rename (a symlink over a symlink too: rename(2) replaces the link itself)."""
    return f"{_q(python)} -c 'import os,sys; os.replace(sys.argv[1], sys.argv[2])' {_q(src)} {_q(dst)}"


def install_script(*, paths: NodePaths, python: str, wh: Wheelhouse, stage: Optional[str],
                   remove_versions: Sequence[str], remove_wheels: Sequence[str]) -> str:
    """The POSIX sh script that installs ``wh`` beside the old version and switches to it.
    Every value is quoted; ``set -e`` stops at the first failed step before the switch."""
    p, b = paths.prefix, paths.bin_dir
    v = f"{p}/versions/{wh.id}"
    w = f"{p}/wheels"
    ck = wh.clusterkit_wheel.name
    pip = wh.pip_wheel
    lines = ["set -eu", "umask 022",
             "export PIP_NO_INDEX=1 PIP_CONFIG_FILE=/dev/null PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1"]
    if stage:
        lines.append(f"for f in {_q(stage)}/*.whl; do [ -e \"$f\" ] || continue; "
                     f"mv -f \"$f\" {_q(w)}/; done; rm -rf {_q(stage)}")
        lines.append(f"chmod 0644 {_q(w)}/*.whl")
    lines += [
        f"if [ ! -e {_q(v + '/' + COMPLETE_MARK)} ]; then",
        f"  rm -rf {_q(v)}",
        f"  {_q(python)} -m venv {'--without-pip ' if pip else ''}{_q(v)}",
        (f"  {_q(v + '/bin/python')} {_q(w + '/' + pip.name + '/pip')} install" if pip else
         f"  {_q(v + '/bin/python')} -m pip install") +
        f" --no-index --no-cache-dir --disable-pip-version-check --quiet --log {_q(v + '/' + PIP_LOG)}"
        f" --find-links {_q(w)} {_q(w + '/' + ck)}",
        f"  got=$({_q(v + '/bin/clusterkit')} --version)",
        f"  case \"$got\" in *\" \"{_q(wh.version)}) ;; *) echo \"installed clusterkit --version says: $got\" >&2; "
        "exit 3;; esac",
        f"  : > {_q(v + '/' + COMPLETE_MARK)}",
        "fi",
        f"ln -sfn {_q('versions/' + wh.id)} {_q(p + '/.current.new')}",
        _replace_cmd(python, f"{p}/.current.new", f"{p}/current"),
        f"mkdir -p {_q(b)}",
        f"ln -sfn {_q(p + '/current/bin/clusterkit')} {_q(b + '/.clusterkit.new')}",
        _replace_cmd(python, f"{b}/.clusterkit.new", f"{b}/clusterkit"),
    ]
    if remove_versions:
        lines.append("rm -rf -- " + " ".join(_q(f"{p}/versions/{x}") for x in remove_versions))
    if remove_wheels:
        lines.append("rm -f -- " + " ".join(_q(f"{w}/{x}") for x in remove_wheels))
    return "\n".join(lines) + "\n"


def _last_error(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith(("ERROR", "error", "Error"))]
    pick = (errors or lines or [""])[-1]
    return " ".join(pick.split())[:300]


# ----------------------------------------------------------------------------- fabric
def _paramiko() -> Any:
    import paramiko

    return paramiko


class StrictHostKeys:
    """paramiko host-key policy: the server key must be listed for this host in known_hosts
    (checked by :mod:`clusterkit.transport.knownhosts`), or the connection is refused."""

    def __init__(self, known: Any, name: str, node: str) -> None:
        self.known = known  # HostKeys for the lookup name
        self.name = name
        self.node = node

    def missing_host_key(self, client: Any, hostname: str, key: Any) -> None:
        from clusterkit.transport.knownhosts import fingerprint, key_type_of

        blob = key.asbytes()
        ktype = key_type_of(blob) or key.get_name()
        verdict, entry = self.known.check(blob)
        if verdict == "ok":
            return
        where = entry.where if entry is not None else "known_hosts"
        why = {
            "revoked": (f"host key for {self.name} is REVOKED ({ktype} {fingerprint(blob)}, @revoked in {where}); "
                        "refusing", "revoked host key"),
            "changed": (f"host key for {self.name} CHANGED: got {ktype} {fingerprint(blob)}, known_hosts ({where}) "
                        "has another; refusing (reinstalled node or man-in-the-middle)", "changed host key"),
            "cert-authority": (f"host key for {self.name}: known_hosts trusts only a host certificate authority "
                               f"({where}); paramiko (fabric) cannot verify host certificates", "host certificate"),
        }.get(verdict, (f"unknown host key for {self.name} ({ktype} {fingerprint(blob)}): not in known_hosts; "
                        "verify it and add it to known_hosts (never accepted automatically)", "unknown host key"))
        raise HostKeyError(why[0], node=self.node, cause=why[1])


class FabricConnector:
    """fabric Connections for nodes: hosts resolved by clusterkit's ssh_config reader, strict
    host keys, identities as ``--identity`` then IdentityFile (else the default keys)."""

    def __init__(self, *, ssh_config: Optional[str] = None, user: Optional[str] = None,
                 identity: Optional[str] = None, connect_timeout: float = 10.0,
                 sudo_password: Optional[str] = None) -> None:
        from clusterkit.transport.knownhosts import KnownHostsCache
        from clusterkit.transport.sshconfig import SSHConfig

        if ssh_config is not None:
            files = [(os.path.expanduser(ssh_config), True)]
        else:
            files = [(os.path.expanduser("~/.ssh/config"), False), ("/etc/ssh/ssh_config", False)]
        self._config = SSHConfig(files)
        self._user = user
        self._identity = os.path.abspath(os.path.expanduser(identity)) if identity else None
        self._timeout = max(1, int(round(connect_timeout)))
        self._sudo_password = sudo_password
        self._known = KnownHostsCache()
        self._prepared: dict[str, Any] = {}  # node name -> its unopened Connection, made by prepare

    def prepare(self, nodes: Sequence[Node]) -> None:
        """Resolve every node (ConfigError, exit 2, before any node is contacted); the
        Connections made are the ones :meth:`connection` hands out."""
        if self._identity is not None and not os.path.isfile(self._identity):
            raise ConfigError(f"--identity {self._identity}: no such file")
        for n in nodes:
            self._prepared[n.name] = self._hop(n.address, self._user or n.user, n.port, n.name, 0)

    def _hop(self, host: str, user: Optional[str], port: Optional[int], node: str, depth: int,
             via: Any = None, own_proxy: bool = True) -> Any:
        import fabric  # type: ignore[import-untyped]

        from clusterkit.transport.knownhosts import lookup_name
        from clusterkit.transport.ssh import disabled_hostkey_algorithms
        from clusterkit.transport.sshconfig import host_config

        if depth > 8:
            raise ConfigError(f"ssh config: ProxyJump chain to {host} is deeper than 8 hops (a loop?)")
        cfg = host_config(self._config.lookup(host, user=user, port=port))
        if cfg.refusals:
            raise ConfigError(cfg.refusals[0].replace("use --transport openssh", "deploy agent cannot honour it"))
        gateway: Any = via
        if own_proxy and cfg.proxy_jump:
            first = cfg.proxy_jump[0]
            gateway = self._hop(first.host, first.user, first.port, node, depth + 1)
            for hop in cfg.proxy_jump[1:]:
                gateway = self._hop(hop.host, hop.user, hop.port, node, depth + 1, via=gateway, own_proxy=False)
        elif own_proxy and cfg.proxy_command:
            gateway = cfg.proxy_command
        known_view = self._known.view(list(cfg.user_known_hosts) + list(cfg.global_known_hosts))
        known_view.load()
        name = lookup_name(cfg.hostname.lower(), cfg.port, cfg.host_key_alias)
        known = known_view.lookup(name)
        disabled = disabled_hostkey_algorithms(known, _paramiko().Transport._preferred_keys, name, node,
                                               remedy="deploy agent checks host keys with paramiko")
        identities = ([self._identity] if self._identity else []) + list(cfg.identity_files)
        for path, where in zip(cfg.identity_files, cfg.identity_where):
            if not os.path.exists(path):
                raise ConfigError(f"identity {path}: no such file (IdentityFile, {where})")
        connect_kwargs: dict[str, Any] = {
            "key_filename": identities or None,
            "look_for_keys": not identities,
            "allow_agent": not cfg.identities_only and cfg.identity_agent != "",
            "disabled_algorithms": {"keys": disabled} if disabled else {},
            "banner_timeout": self._timeout, "auth_timeout": self._timeout,
        }
        config = fabric.Config(ssh_config=_paramiko().SSHConfig(), lazy=True, overrides={
            "load_ssh_configs": False,
            "run": {"hide": True, "warn": True, "in_stream": False},
            "sudo": {"password": self._sudo_password},
            "timeouts": {"connect": self._timeout},
        })
        conn = fabric.Connection(host=cfg.hostname, user=cfg.user, port=cfg.port, config=config,
                                 gateway=gateway if gateway is not None else False,
                                 connect_timeout=self._timeout, connect_kwargs=connect_kwargs)
        # fabric sets AutoAddPolicy and loads no known_hosts: replace it before first use
        conn.client.set_missing_host_key_policy(StrictHostKeys(known, name, node))
        return conn

    def connection(self, node: Node) -> Any:
        """An unopened fabric Connection to ``node`` (ConfigError for a config that cannot work)."""
        prepared = self._prepared.pop(node.name, None)
        if prepared is not None:
            return prepared
        return self._hop(node.address, self._user or node.user, node.port, node.name, 0)


def _connect_reason(e: BaseException) -> str:
    paramiko = _paramiko()
    import socket

    if isinstance(e, HostKeyError):
        return str(e)
    if isinstance(e, paramiko.BadHostKeyException):
        return "host key CHANGED: refusing"
    if isinstance(e, paramiko.AuthenticationException):
        return f"authentication failed: {_last_error(str(e)) or type(e).__name__}"
    if isinstance(e, paramiko.ssh_exception.NoValidConnectionsError):
        errs = {(x.strerror or str(x)).lower() for x in e.errors.values()}
        return f"cannot connect: {', '.join(sorted(errs))}"
    if isinstance(e, socket.timeout):
        return "cannot connect: timed out"
    if isinstance(e, OSError):
        return f"cannot connect: {(e.strerror or str(e)).lower()}"
    return f"cannot connect: {_last_error(str(e)) or type(e).__name__}"


class NodeSession:
    """One node's fabric Connection and the steps run over it."""

    def __init__(self, conn: Any, node: str, sudo: bool, timeout: float) -> None:
        self.conn = conn
        self.node = node
        self.sudo = sudo
        self.timeout = timeout
        self.uploaded_files = 0
        self.uploaded_bytes = 0

    def open(self) -> None:
        try:
            self.conn.open()
        except Exception as e:  # noqa: BLE001 - every connect failure is this node's reason
            raise StepError(_connect_reason(e)) from None

    def sh(self, script: str, what: str, *, sudo: Optional[bool] = None, timeout: Optional[float] = None) -> str:
        """Run ``script`` under ``sh -c`` (``sudo`` when asked); stdout, or StepError naming ``what``."""
        from invoke.exceptions import CommandTimedOut, Failure, ThreadException

        paramiko = _paramiko()
        use_sudo = self.sudo if sudo is None else sudo
        cmd = "sh -c " + shlex.quote(script)
        limit = self.timeout if timeout is None else timeout
        try:
            if use_sudo:
                r = self.conn.sudo(cmd, hide=True, warn=True, in_stream=False, timeout=limit)
            else:
                r = self.conn.run(cmd, hide=True, warn=True, in_stream=False, timeout=limit)
        except CommandTimedOut:
            raise StepError(f"{what}: timed out after {limit:g}s") from None
        except Failure as e:  # sudo refused the password
            raise StepError(f"{what}: sudo failed: {_last_error(str(e.result.stderr)) or 'wrong password?'}") from None
        except (ThreadException, paramiko.SSHException, EOFError, OSError) as e:
            raise StepError(f"{what}: connection lost ({_last_error(str(e)) or type(e).__name__})") from None
        if r.exited != 0:
            if r.exited == -1 or not self._alive():
                raise StepError(f"{what}: connection lost before the command finished")
            detail = _last_error(r.stderr) or _last_error(r.stdout) or f"exit {r.exited}"
            raise StepError(f"{what}: {detail}")
        return str(r.stdout)

    def _alive(self) -> bool:
        t = self.conn.transport
        return bool(t is not None and t.is_active())

    def put(self, local: Any, remote: str, size: int, what: str) -> None:
        """SFTP ``local`` (a path or bytes) to ``remote`` (a temporary name the caller renames)."""
        paramiko = _paramiko()
        src = io.BytesIO(local) if isinstance(local, bytes) else str(local)
        try:
            self.conn.put(src, remote=remote, preserve_mode=False)
        except (paramiko.SSHException, EOFError, OSError) as e:
            if not self._alive():
                raise StepError(f"{what}: connection lost during the upload") from None
            msg = getattr(e, "strerror", None) or _last_error(str(e)) or type(e).__name__
            raise StepError(f"{what}: upload to {remote} failed: {msg}") from None
        self.uploaded_files += 1
        self.uploaded_bytes += size

    def rename(self, src: str, dst: str, what: str) -> None:
        paramiko = _paramiko()
        try:
            self.conn.sftp().posix_rename(src, dst)
        except (paramiko.SSHException, EOFError, OSError) as e:
            raise StepError(f"{what}: rename to {dst} failed: {getattr(e, 'strerror', None) or e}") from None

    def close(self) -> None:
        try:
            self.conn.close()
        except Exception:  # noqa: BLE001 - closing a dead connection
            pass


# ----------------------------------------------------------------------------- one node
class Deployer:
    """Runs ``deploy agent`` over nodes with a bounded thread pool."""

    def __init__(self, options: Options, connector: FabricConnector, *,
                 builder: Optional[WheelhouseBuilder] = None, wheelhouse: Optional[Wheelhouse] = None,
                 fanout: int = DEFAULT_FANOUT, progress: Callable[[str], None] = lambda _m: None) -> None:
        if builder is None and wheelhouse is None:
            raise ValueError("a builder or a wheelhouse")
        self.options = options
        self.connector = connector
        self.builder = builder
        self.wheelhouse = wheelhouse
        self.fanout = max(1, fanout)
        self.progress = progress
        self._used: dict[str, Wheelhouse] = {}
        self._lock = threading.Lock()

    def _wheelhouse_for(self, platform: Platform) -> Wheelhouse:
        wh = self.wheelhouse if self.wheelhouse is not None else self.builder.get(platform)  # type: ignore[union-attr]
        with self._lock:
            self._used.setdefault(wh.id, wh)
        return wh

    def run(self, nodes: Sequence[Node]) -> DeployReport:
        t0 = time.monotonic()
        results: dict[str, NodeResult] = {}
        last = [0.0]
        with ThreadPoolExecutor(max_workers=min(self.fanout, max(1, len(nodes))),
                                thread_name_prefix="deploy-agent") as pool:
            futures = {pool.submit(self.node, n): n for n in nodes}
            for fut in as_completed(futures):
                n = futures[fut]
                try:
                    results[n.name] = fut.result()
                except Exception as e:  # noqa: BLE001 - a bug: this node fails, the others go on
                    results[n.name] = NodeResult(n.name, FAILED, f"internal error: {type(e).__name__}: {e}")
                now = time.monotonic()
                if now - last[0] >= 2.0 or len(results) == len(nodes):
                    last[0] = now
                    failed = sum(1 for r in results.values() if r.status == FAILED)
                    self.progress(f"{len(results)}/{len(nodes)} nodes done ({failed} failed, "
                                  f"{now - t0:.0f}s)")
        report = DeployReport([results[n.name] for n in nodes], dry_run=self.options.dry_run,
                              prefix=self.options.prefix, wheelhouses=list(self._used.values()))
        report.duration_s = time.monotonic() - t0
        return report

    def node(self, node: Node) -> NodeResult:
        t0 = time.monotonic()
        res = NodeResult(node.name)
        try:
            conn = self.connector.connection(node)
        except ClusterkitError as e:
            res.reason = str(e)
            return res
        sess = NodeSession(conn, node.name, self.options.sudo, self.options.timeout)
        try:
            sess.open()
            self._node_steps(sess, node, res)
        except StepError as e:
            res.status, res.reason = FAILED, str(e)
        except WheelhouseError as e:
            res.status, res.reason = FAILED, str(e)
        finally:
            sess.close()
            res.uploaded_files, res.uploaded_bytes = sess.uploaded_files, sess.uploaded_bytes
            res.duration_s = time.monotonic() - t0
        return res

    def _node_steps(self, sess: NodeSession, node: Node, res: NodeResult) -> None:
        opts = self.options
        paths = opts.for_node(node.name)
        py = opts.python
        args = json.dumps(paths.probe_args(opts.sudo))
        out = sess.sh(f"command -v {_q(py)} >/dev/null 2>&1 || {{ echo \"no {py} on the node (--python)\" >&2; "
                      f"exit 127; }}\nexec {_q(py)} -c {_q(PROBE)} {_q(args)}", "ask the node", sudo=False,
                      timeout=min(120.0, opts.timeout))
        doc = last_json_object(out)
        try:
            if doc is None:
                raise ValueError("no JSON object")
            facts = NodeFacts.from_json(doc)
        except (ValueError, KeyError, TypeError):
            raise StepError(f"ask the node: unreadable answer from {py}: {_last_error(out) or 'nothing'}") from None
        res.platform = facts.platform.label
        res.old_id, res.old_version = facts.current, facts.current_version
        wh = self._wheelhouse_for(facts.platform)
        res.new_id, res.new_version = wh.id, wh.version
        changed = False
        if is_unchanged(facts, wh):
            res.actions.append(f"clusterkit {wh.version} already current")
        else:
            blocked = {p: b for p, b in facts.blocked.items() if b and p in (paths.prefix, paths.bin_dir)}
            if blocked:
                path, by = next(iter(blocked.items()))
                raise StepError(f"no write access to {path} for {facts.user or 'the login user'}: {by} is not "
                                "writable by it; give a --prefix/--bin-dir it may write, or --sudo")
            upload = wheels_to_upload(facts.wheels, wh)
            size = sum(f.size for f in upload)
            if facts.current and facts.current in facts.versions and facts.current != wh.id:
                what = f"upgrade {facts.current} -> {wh.id}"
            elif facts.current == wh.id:
                what = f"repair {wh.id} (--version answered {facts.current_version or 'nothing'})"
            else:
                what = f"install {wh.id}"
            if opts.dry_run:
                res.actions.append(f"would {what}: upload {len(upload)} wheels ({human_bytes(size)})")
            else:
                self._install(sess, paths, facts, wh, upload)
                res.actions.append(f"{what}: {len(upload)} wheels ({human_bytes(size)}) uploaded")
            changed = True
        changed = self._extras(sess, paths, facts, res) or changed
        res.status = CHANGED if changed else UNCHANGED

    def _install(self, sess: NodeSession, paths: NodePaths, facts: NodeFacts, wh: Wheelhouse,
                 upload: Sequence[WheelFile]) -> None:
        opts = self.options
        p = paths.prefix
        sess.sh(f"mkdir -p {_q(p + '/wheels')} {_q(p + '/versions')}", f"create {p}")
        stage: Optional[str] = None
        if opts.sudo and upload:
            stage = sess.sh("mktemp -d \"${TMPDIR:-/tmp}/clusterkit-deploy.XXXXXXXX\"", "staging directory",
                            sudo=False).strip()
        for f in upload:
            if stage:
                sess.put(f.path, f"{stage}/{f.name}", f.size, f"upload {f.name}")
            else:
                tmp = f"{p}/wheels/.{f.name}.part"
                sess.put(f.path, tmp, f.size, f"upload {f.name}")
                sess.rename(tmp, f"{p}/wheels/{f.name}", f"upload {f.name}")
        remove_versions = versions_to_remove(facts.versions, new_id=wh.id, old_id=facts.current, keep=opts.keep)
        remove_wheels = wheels_to_remove(facts.wheels, wh)
        script = install_script(paths=paths, python=opts.python, wh=wh, stage=stage,
                                remove_versions=remove_versions, remove_wheels=remove_wheels)
        sess.sh(script, f"install {wh.id}")

    def _extras(self, sess: NodeSession, paths: NodePaths, facts: NodeFacts, res: NodeResult) -> bool:
        opts = self.options
        changed = False
        for extra, path in paths.extras:
            if facts.files.get(path) == extra.sha256:
                continue
            changed = True
            if opts.dry_run:
                res.actions.append(f"would write {extra.kind} {path}")
                continue
            d, base = os.path.dirname(path) or "/", os.path.basename(path)
            if not opts.sudo and facts.blocked.get(d):
                raise StepError(f"{extra.kind}: no write access to {d}: {facts.blocked[d]} is not writable by "
                                f"{facts.user or 'the login user'}; use --sudo")
            if opts.sudo:
                stage = sess.sh("mktemp \"${TMPDIR:-/tmp}/clusterkit-extra.XXXXXXXX\"", "staging file",
                                sudo=False).strip()
                sess.put(extra.content, stage, len(extra.content), extra.kind)
                sess.sh(f"set -e\nmkdir -p {_q(d)}\ncp {_q(stage)} {_q(d + '/.' + base + '.new')}\n"
                        f"rm -f {_q(stage)}\nchmod {extra.mode:04o} {_q(d + '/.' + base + '.new')}\n"
                        f"mv -f {_q(d + '/.' + base + '.new')} {_q(path)}", extra.kind)
            else:
                sess.sh(f"mkdir -p {_q(d)}", extra.kind, sudo=False)
                tmp = f"{d}/.{base}.new"
                sess.put(extra.content, tmp, len(extra.content), extra.kind)
                sess.sh(f"chmod {extra.mode:04o} {_q(tmp)}", extra.kind, sudo=False)
                sess.rename(tmp, path, extra.kind)
            res.actions.append(f"wrote {extra.kind} {path}")
        if paths.state_dir:
            sd = paths.state_dir
            info = facts.dirs.get(sd)
            owner = opts.state_owner
            if info is not None and not info.get("isdir"):
                raise StepError(f"state directory {sd}: exists and is not a directory")
            need_make = info is None
            need_chown = bool(owner) and (info is None or info.get("owner") != owner)
            if need_make or need_chown:
                changed = True
                what = ("make " if need_make else "") + (f"chown {owner} " if need_chown else "")
                if opts.dry_run:
                    res.actions.append(f"would {what.strip()} state directory {sd}")
                else:
                    script = "set -e\n" + (f"mkdir -p -m 0750 {_q(sd)}\n" if need_make else "") + \
                        (f"chown {_q(owner or '')} {_q(sd)}\n" if need_chown else "")
                    sess.sh(script, f"state directory {sd}")
                    res.actions.append(f"state directory {sd} ({what.strip()})")
        return changed


def deploy(nodes: Sequence[Node], options: Options, *, connector: FabricConnector,
           wheelhouse_dir: Optional[str] = None, cache_dir: Optional[Path] = None, fanout: int = DEFAULT_FANOUT,
           progress: Callable[[str], None] = lambda _m: None) -> DeployReport:
    """Library entry point: resolve every node first (ConfigError before any contact), then
    deploy to all of them, at most ``fanout`` at once."""
    connector.prepare(nodes)
    wh = load_wheelhouse_dir(wheelhouse_dir) if wheelhouse_dir else None
    builder = None if wh is not None else WheelhouseBuilder(cache_dir, log=progress)
    return Deployer(options, connector, builder=builder, wheelhouse=wh, fanout=fanout, progress=progress).run(nodes)


__all__ = [
    "CHANGED", "DEFAULT_BIN_DIR", "DEFAULT_HEALTHCHECK_PATH", "DEFAULT_PREFIX", "DEFAULT_PYTHON",
    "DEFAULT_TELEGRAF_PATH", "DeployReport", "Deployer", "Extra", "FAILED", "FabricConnector", "NodeFacts",
    "NodeResult", "Options", "Platform", "SCHEMA", "StrictHostKeys", "UNCHANGED", "Wheelhouse",
    "WheelhouseBuilder", "WheelhouseError", "deploy", "healthcheck_wrapper_text",
    "install_script", "is_unchanged", "load_wheelhouse_dir", "versions_to_remove", "wheelhouse_from_files",
    "wheels_to_remove", "wheels_to_upload",
]
