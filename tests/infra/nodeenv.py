"""The node-side virtualenv: clusterkit installed (non-editable) where a plain user can run it.

A simulated node is an sshd that logs a plain (non-root) user in; that user runs
``clusterkit node-check`` from this virtualenv, which the node's ``PATH`` puts first.

Why it is built the way it is:

- It is made from the system interpreter (``/usr/bin/python3``): a virtualenv made from an
  interpreter under root's home (a pyenv build, mode 0700) cannot be executed by anyone else.
- It lives in a world-readable directory (the system temp dir by default, or
  ``$CLUSTERKIT_NODEENV_ROOT``), every path component traversable, every file readable.
- clusterkit is installed non-editable from a snapshot of the repository's sources, so the
  node runs exactly the code that was hashed, never the live working tree.
- It is cached by a hash of ``clusterkit/`` + ``pyproject.toml`` (+ the base interpreter):
  a re-run with unchanged sources reuses it at once.
- Two layers keep rebuilds after a source edit fast (about a second instead of ~12 s):
  a *deps* venv (keyed by ``pyproject.toml``) holds the third-party dependencies; the *node*
  venv (keyed by the sources) is a bare venv that sees the deps layer through a ``.pth``
  file and has only clusterkit itself installed into it.

Entry point: :func:`ensure_node_venv`. Failures raise :class:`NodeEnvError` with the reason
(tests turn it into a skip).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import stat
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
BASE_PYTHON = "/usr/bin/python3"
ROOT_ENV = "CLUSTERKIT_NODEENV_ROOT"

_LAYOUT = "nodeenv-layout-2"  # bump to invalidate every cached venv
_MARKER = ".clusterkit-nodeenv.json"
_PTH = "_clusterkit_nodedeps.pth"
_PRUNE_AFTER_S = 6 * 3600
_TOP_FILES = ("pyproject.toml", "setup.cfg", "setup.py", "MANIFEST.in", "README.md",
              "README.rst", "LICENSE", "LICENSE.txt")
_SKIP_DIRS = {"__pycache__", ".mypy_cache", ".ruff_cache", ".pytest_cache"}
_SKIP_SUFFIXES = (".pyc", ".pyo", "~", ".swp")


class NodeEnvError(RuntimeError):
    """The node virtualenv cannot be built here (reason in the message)."""


# ----------------------------------------------------------------------------- sources
def collect_sources(repo_root: Path | str = REPO_ROOT) -> dict[str, bytes]:
    """Relative path -> content of everything the package build reads."""
    repo = Path(repo_root)
    if not (repo / "pyproject.toml").is_file() or not (repo / "clusterkit").is_dir():
        raise NodeEnvError(f"{repo} does not look like the clusterkit repository")
    files: dict[str, bytes] = {}
    for name in _TOP_FILES:
        p = repo / name
        if p.is_file():
            files[name] = p.read_bytes()
    for dirpath, dirnames, filenames in os.walk(repo / "clusterkit"):
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS and not d.startswith("."))
        for fn in sorted(filenames):
            if fn.endswith(_SKIP_SUFFIXES) or fn.startswith(".#"):
                continue
            p = Path(dirpath) / fn
            if p.is_file():
                files[p.relative_to(repo).as_posix()] = p.read_bytes()
    return files


def _python_identity(python: str) -> str:
    real = os.path.realpath(python)
    try:
        st = os.stat(real)
    except OSError as e:
        raise NodeEnvError(f"base interpreter {python} not found: {e}") from None
    return f"{real}:{st.st_size}:{st.st_mtime_ns}"


def _digest(*parts: bytes | str) -> str:
    h = hashlib.sha256()
    for part in parts:
        b = part.encode() if isinstance(part, str) else part
        h.update(len(b).to_bytes(8, "big"))
        h.update(b)
    return h.hexdigest()


def deps_hash(files: dict[str, bytes], base_python: str = BASE_PYTHON) -> str:
    return _digest(_LAYOUT, _python_identity(base_python), files.get("pyproject.toml", b""))


def sources_hash(files: dict[str, bytes], base_python: str = BASE_PYTHON) -> str:
    parts: list[bytes | str] = [_LAYOUT, deps_hash(files, base_python)]
    for rel in sorted(files):
        parts += [rel, files[rel]]
    return _digest(*parts)


# ----------------------------------------------------------------------------- helpers
def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP",
                        "PIP_REQUIRE_VIRTUALENV", "PIP_USER", "PIP_TARGET", "PIP_PREFIX")}
    env["PIP_NO_INPUT"] = "1"
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


def _run(argv: list[str], what: str, timeout: float = 600) -> str:
    try:
        cp = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                            env=_clean_env(), timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise NodeEnvError(f"{what} failed: {e}") from None
    if cp.returncode != 0:
        # pip prints a warning per missing file:// index location; keep the tail readable.
        lines = [ln for ln in (cp.stdout + cp.stderr).splitlines() if "is ignored:" not in ln]
        tail = "\n".join(lines[-25:])
        raise NodeEnvError(f"{what} failed (exit {cp.returncode}): {' '.join(argv)}\n{tail}")
    return cp.stdout


def _world_reachable(path: Path) -> str | None:
    """None when every component of `path` is traversable by others; else the culprit."""
    p = path.resolve()
    for anc in [p, *p.parents]:
        try:
            mode = anc.stat().st_mode
        except OSError as e:
            return f"{anc}: {e}"
        if not mode & stat.S_IXOTH:
            return f"{anc} (mode {stat.filemode(mode)})"
    return None


def _open_to_all(top: Path) -> None:
    """chmod go+rX over a tree (umask-proof): dirs 0755, files o+r (+x where u+x)."""
    for dirpath, dirnames, filenames in os.walk(top):
        for name in [*dirnames, *filenames]:
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            if stat.S_ISLNK(st.st_mode):
                continue
            mode = stat.S_IMODE(st.st_mode)
            want = mode | 0o044
            if stat.S_ISDIR(st.st_mode) or mode & 0o100:
                want |= 0o011
            if want != mode:
                os.chmod(p, want)
    os.chmod(top, stat.S_IMODE(os.stat(top).st_mode) | 0o755)


def _purelib(python: Path) -> Path:
    out = _run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
               f"asking {python} for its site-packages")
    return Path(out.strip())


def _write_tree(files: dict[str, bytes], dest: Path) -> None:
    for rel, data in files.items():
        p = dest / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)


def _read_marker(venv: Path) -> dict | None:
    try:
        return json.loads((venv / _MARKER).read_text())
    except (OSError, ValueError):
        return None


def _write_marker(venv: Path, data: dict) -> None:
    tmp = venv / (_MARKER + ".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.chmod(tmp, 0o644)
    os.replace(tmp, venv / _MARKER)


@contextlib.contextmanager
def _locked(root: Path) -> Iterator[None]:
    lock = root / "clusterkit-nodeenv.lock"
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def check_base_python(base_python: str = BASE_PYTHON) -> None:
    """Raise NodeEnvError unless `base_python` can make virtualenvs other users can run."""
    if not os.path.isfile(base_python) or not os.access(base_python, os.X_OK):
        raise NodeEnvError(f"no system interpreter at {base_python}")
    real = Path(os.path.realpath(base_python))
    if not real.stat().st_mode & stat.S_IXOTH or _world_reachable(real.parent):
        raise NodeEnvError(f"{real} is not executable by other users "
                           f"({_world_reachable(real.parent) or 'mode'}); the node user could "
                           "not run a virtualenv made from it")
    try:
        _run([base_python, "-c", "import venv, ensurepip"], f"{base_python} venv/ensurepip check",
             timeout=60)
    except NodeEnvError as e:
        raise NodeEnvError(f"{base_python} cannot create virtualenvs with pip (install the "
                           f"python3-venv package): {e}") from None


# ----------------------------------------------------------------------------- build
def _build_deps(dest: Path, files: dict[str, bytes], base_python: str, key: str) -> None:
    """A full venv with clusterkit's dependencies (and wheel/setuptools) but not clusterkit."""
    shutil.rmtree(dest, ignore_errors=True)
    _run([base_python, "-m", "venv", str(dest)], f"creating {dest}")
    py = dest / "bin" / "python"
    with tempfile.TemporaryDirectory(prefix="clusterkit-nodeenv-src-") as staging:
        _write_tree(files, Path(staging))
        _run([str(py), "-m", "pip", "install", "--quiet", str(staging), "wheel", "setuptools>=64"],
             "installing clusterkit's dependencies into the node deps venv")
    _run([str(py), "-m", "pip", "uninstall", "--quiet", "--yes", "clusterkit"],
         "removing clusterkit from the node deps venv")
    _open_to_all(dest)
    _write_marker(dest, {"hash": key, "built": time.time()})


def _build_node(dest: Path, deps: Path, files: dict[str, bytes], base_python: str,
                key: str) -> None:
    shutil.rmtree(dest, ignore_errors=True)
    _run([base_python, "-m", "venv", "--without-pip", str(dest)], f"creating {dest}")
    py = dest / "bin" / "python"
    (_purelib(py) / _PTH).write_text(f"{_purelib(deps / 'bin' / 'python')}\n")
    with tempfile.TemporaryDirectory(prefix="clusterkit-nodeenv-src-") as staging:
        _write_tree(files, Path(staging))
        # pip (and setuptools/wheel) come from the deps layer through the .pth file; the
        # package lands in this venv's own site-packages, console script in its bin/.
        _run([str(py), "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
              "--no-index", str(staging)], "installing clusterkit into the node venv")
    _run([str(dest / "bin" / "clusterkit"), "--version"], "running clusterkit from the node venv")
    _open_to_all(dest)
    _write_marker(dest, {"hash": key, "deps": str(deps), "built": time.time()})


def _age(p: Path) -> float:
    for q in (p / _MARKER, p):
        try:
            return time.time() - q.stat().st_mtime
        except OSError:
            continue
    return 0.0


def _prune(root: Path, keep: set[Path]) -> None:
    """Remove node venvs unused for a while, and deps layers no remaining venv uses."""
    live_deps: set[str] = set()
    for p in root.glob("clusterkit-nodeenv-*"):
        if not p.is_dir():
            continue
        if p not in keep and _age(p) > _PRUNE_AFTER_S:
            shutil.rmtree(p, ignore_errors=True)
            continue
        m = _read_marker(p)
        if m and m.get("deps"):
            live_deps.add(m["deps"])
    for p in root.glob("clusterkit-nodedeps-*"):
        if p.is_dir() and p not in keep and str(p) not in live_deps and _age(p) > _PRUNE_AFTER_S:
            shutil.rmtree(p, ignore_errors=True)


def ensure_node_venv(repo_root: Path | str = REPO_ROOT, *, base_python: str = BASE_PYTHON,
                     root: Path | str | None = None,
                     log: Callable[[str], None] | None = None) -> Path:
    """Return the path of an up-to-date node virtualenv, building it if needed.

    Safe to call from several processes at once (a file lock serialises builds).
    """
    say = log or (lambda _msg: None)
    files = collect_sources(repo_root)
    base = Path(root or os.environ.get(ROOT_ENV) or tempfile.gettempdir())
    base.mkdir(parents=True, exist_ok=True)
    bad = _world_reachable(base)
    if bad:
        raise NodeEnvError(f"node venv root {base} is not traversable by other users: {bad}")
    dkey = deps_hash(files, base_python)
    skey = sources_hash(files, base_python)
    node = base / f"clusterkit-nodeenv-{skey[:16]}"
    deps = base / f"clusterkit-nodedeps-{dkey[:16]}"
    with _locked(base):
        marker = _read_marker(node)
        if marker and marker.get("hash") == skey and (node / "bin" / "clusterkit").exists() \
                and (_read_marker(deps) or {}).get("hash") == dkey:
            os.utime(node / _MARKER)
            return node
        check_base_python(base_python)
        if (_read_marker(deps) or {}).get("hash") != dkey:
            say(f"building node deps venv {deps} (from {base_python})")
            t0 = time.monotonic()
            _build_deps(deps, files, base_python, dkey)
            say(f"  done in {time.monotonic() - t0:.1f} s")
        say(f"building node venv {node}")
        t0 = time.monotonic()
        _build_node(node, deps, files, base_python, skey)
        say(f"  done in {time.monotonic() - t0:.1f} s")
        _prune(base, keep={node, deps})
    return node


def node_bin(venv: Path | str) -> Path:
    return Path(venv) / "bin"


if __name__ == "__main__":  # pragma: no cover - manual use: python -m tests.infra.nodeenv
    print(ensure_node_venv(log=print))
