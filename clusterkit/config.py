"""Reading the user's YAML files (profiles, inventories, sim fleets) into strict models.

Every problem becomes one :class:`ConfigError` line naming the file and, where known, the line
or the key: ``inventory fleet.yaml: nodes.0.port: Input should be a valid integer``.

The YAML loader (``StrictLoader``: PyYAML's safe loader, libyaml's parser when PyYAML has it)
is stricter than ``yaml.safe_load``:

* a key given twice in one mapping is refused (PyYAML keeps the last one silently: an
  inventory with ``nodes:`` twice would lose the first block);
* a file is at most :data:`MAX_FILE_BYTES`, holds at most :data:`MAX_NODES` YAML nodes with
  every alias counted as the whole subtree it stands for (so a "billion laughs" alias bomb is
  refused while it is being read, long before anything copies it), and nests at most
  :data:`MAX_DEPTH` levels; an alias that refers to its own anchor is refused.

Numbers in the models are strict (:data:`Int`, :data:`Num`): ``true`` is not 1 and ``"8"`` is
not 8; a whole number is accepted where any number is meant.
"""

from __future__ import annotations

from typing import Annotated, Any, TypeVar

from typing import TYPE_CHECKING

from clusterkit.errors import ConfigError
from clusterkit.record import FINITE, STRICT

if TYPE_CHECKING:  # pragma: no cover
    from pydantic_core import PydanticCustomError

M = TypeVar("M")

# The markers are read by Records (clusterkit.record) and by pydantic models alike.
#: A whole number: no booleans, no strings, no floats.
Int = Annotated[int, STRICT]
#: Any finite number, whole or not: no booleans, no strings, no ``.inf``/``.nan``.
Num = Annotated[float, STRICT, FINITE]
#: A flag: ``true``/``false`` only.
Bool = Annotated[bool, STRICT]

#: The most GPUs one node (one OS) may have. An HGX/DGX baseboard has 8, the largest single-OS
#: systems have had 16 (DGX-2/HGX-2), and a GB200 NVL72 rack is 18 nodes of 4 GPUs each; 64
#: leaves ample room while a typo (``count: 100000``) can no longer make the simulator build
#: a hundred thousand GPUs per node (gigabytes) or a profile demand them.
MAX_GPUS = 64
#: The most logical CPUs one node may have: Linux's own ceiling (``CONFIG_NR_CPUS`` is at most
#: 8192 on x86-64, with MAXSMP).
MAX_CPUS = 8192
#: The most paths one profile checks, or one simulated node has disks for.
MAX_PATHS = 256

#: The largest input file (profiles, inventories, sim fleets): far above any real one.
MAX_FILE_BYTES = 16 * 1024 * 1024
#: The most YAML nodes (scalars, lists, mappings) one document may stand for, an alias counted
#: as every node it repeats. An inventory listing 20,000 nodes one by one with a few labels each
#: is about 300,000; hostlists make real files far smaller.
MAX_NODES = 500_000
#: The deepest nesting of lists and mappings (the models are at most 5 levels deep).
MAX_DEPTH = 64


def invalid(message: str) -> "PydanticCustomError":
    """An error for a pydantic model's validator to raise: ``message`` is shown as it is (no
    'Value error, '). A Record's validator raises ``clusterkit.record.Invalid`` instead."""
    from pydantic_core import PydanticCustomError

    return PydanticCustomError("invalid", "{message}", {"message": message})


def split_words(value: Any) -> Any:
    """A list-of-words value also takes one string, split as a shell would (``--foo 'a b'``);
    a tuple becomes a list (a validator for ``BeforeValidator``)."""
    if isinstance(value, str):
        import shlex

        try:
            return shlex.split(value)
        except ValueError as e:
            raise invalid(f"cannot split {value!r} into words: {e}") from None
    if isinstance(value, tuple):
        return list(value)
    return value


def first_error(e: Any, top: str = "(top)") -> str:
    """One line for the first problem of a ValidationError (pydantic's or a Record's, alike):
    'gpu.count: Input should be ...'; ``top`` names a problem of the whole document."""
    errs = e.errors()
    if not errs:  # pragma: no cover
        return str(e).splitlines()[0]
    err = errs[0]
    loc = ".".join(str(p) for p in err.get("loc", ())) or top
    more = f" (and {len(errs) - 1} more)" if len(errs) > 1 else ""
    return f"{loc}: {err.get('msg', 'invalid')}{more}"


def _show_key(key: Any) -> str:
    text = repr(key)
    return text if len(text) <= 60 else text[:57] + "..."


def _loader_class() -> type:
    """The strict loader, built on first use (yaml is imported lazily)."""
    global _LOADER
    if _LOADER is not None:
        return _LOADER
    import yaml
    from yaml.composer import Composer, ComposerError
    from yaml.constructor import ConstructorError, SafeConstructor
    from yaml.nodes import MappingNode
    from yaml.resolver import Resolver

    merge_tag = "tag:yaml.org,2002:merge"
    try:  # libyaml scans and parses (5x faster); composing stays in Python, where it is counted
        from yaml._yaml import CParser as Parser
    except ImportError:  # pragma: no cover - a PyYAML built without libyaml
        from yaml.parser import Parser as PyParser
        from yaml.reader import Reader
        from yaml.scanner import Scanner

        class Parser(Reader, Scanner, PyParser):  # type: ignore[no-redef]
            def __init__(self, stream: Any) -> None:
                Reader.__init__(self, stream)
                Scanner.__init__(self)
                PyParser.__init__(self)

    class StrictLoader(Composer, Parser, SafeConstructor, Resolver):
        """A safe loader that refuses duplicate keys, alias bombs, recursive aliases, deep nesting."""

        def __init__(self, stream: Any) -> None:
            Parser.__init__(self, stream)
            Composer.__init__(self)
            SafeConstructor.__init__(self)
            Resolver.__init__(self)
            self._expanded = 0  # nodes so far, each alias counted as the subtree it repeats
            self._depth = 0
            self._anchored_sizes: dict[int, int] = {}  # id(anchored node) -> its expanded size

        def _count(self, n: int, mark: Any) -> None:
            self._expanded += n
            if self._expanded > MAX_NODES:
                raise ComposerError(None, None, f"more than {MAX_NODES:,} YAML nodes (every use of an "
                                    "alias counts the nodes it repeats): refused", mark)

        def compose_node(self, parent: Any, index: Any) -> Any:
            event: Any = self.peek_event()
            if self.check_event(yaml.AliasEvent):
                node = super().compose_node(parent, index)  # undefined aliases are refused there
                size = self._anchored_sizes.get(id(node))
                if size is None:
                    raise ComposerError(None, None, f"alias *{event.anchor} refers to a node that "
                                        "contains it: refused", event.start_mark)
                self._count(size, event.start_mark)
                return node
            self._depth += 1
            if self._depth > MAX_DEPTH:
                raise ComposerError(None, None, f"nested more than {MAX_DEPTH} levels deep: refused",
                                    event.start_mark)
            before = self._expanded
            self._count(1, event.start_mark)
            node = super().compose_node(parent, index)
            self._depth -= 1
            if event.anchor is not None:
                self._anchored_sizes[id(node)] = self._expanded - before
            return node

        def construct_mapping(self, node: Any, deep: bool = False) -> Any:
            if isinstance(node, MappingNode):
                seen: dict[Any, Any] = {}
                for key_node, _ in node.value:
                    if key_node.tag == merge_tag:  # '<<: *base' merges; its keys may be overridden
                        continue
                    key = self.construct_object(key_node, deep=True)
                    try:
                        first = seen.setdefault(key, key_node)
                    except TypeError:  # unhashable: PyYAML's own error follows
                        continue
                    if first is not key_node:
                        raise ConstructorError(
                            None, None,
                            f"duplicate key {_show_key(key)} (first on line {first.start_mark.line + 1})",
                            key_node.start_mark)
            return super().construct_mapping(node, deep=deep)

    _LOADER = StrictLoader
    return StrictLoader


_LOADER: type | None = None


def check_size(text: str, label: str) -> None:
    if len(text) > MAX_FILE_BYTES:
        raise ConfigError(f"{label}: larger than {MAX_FILE_BYTES // (1024 * 1024)} MiB: refused")


def safe_load(text: str, label: str) -> Any:
    """Parse YAML ``text`` with the strict loader; every problem is one ConfigError line.

    The text of a YAML file packaged with clusterkit (a built-in profile, the built-in sim
    fleet) is answered from its parsed form (:func:`packaged`) without the YAML parser."""
    data = packaged(text)
    if data is not None:
        return data
    return _parse(text, label)


def _parse(text: str, label: str) -> Any:
    import yaml

    check_size(text, label)
    try:
        return yaml.load(text, Loader=_loader_class())  # noqa: S506 - safe: SafeConstructor
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise ConfigError(f"{label}{where}: {getattr(e, 'problem', None) or 'not valid YAML'}") from None
    except RecursionError:  # pragma: no cover - MAX_DEPTH stops nesting well before this
        raise ConfigError(f"{label}: nested too deeply") from None


def is_validation_error(e: BaseException) -> bool:
    """A Record's or a pydantic model's ValidationError (both are ValueErrors; pydantic's is
    recognised without importing pydantic)."""
    return type(e).__name__ == "ValidationError" and callable(getattr(e, "errors", None))


def load_yaml_model(text: str, model: type[M], label: str, expected: str = "a mapping of keys") -> M:
    """Validate YAML (or JSON) ``text`` as ``model`` (a Record or a pydantic model); ``label``
    ('profile my.yaml') starts errors."""
    data = safe_load(text, label)
    if not isinstance(data, dict):
        raise ConfigError(f"{label}: expected {expected}, got {type(data).__name__}")
    try:
        return model.model_validate(data)  # type: ignore[attr-defined]
    except ValueError as e:
        if not is_validation_error(e):
            raise
        raise ConfigError(f"{label}: {first_error(e)}") from None
    except RecursionError:  # pragma: no cover - MAX_DEPTH stops nesting well before this
        raise ConfigError(f"{label}: nested too deeply") from None


def package_text(package: str, *parts: str) -> str | None:
    """The text of a data file of a clusterkit package (``package_text("clusterkit.profiles",
    "h100-sxm.yaml")``), or None when there is none. Read beside the module, as a wheel installs
    it; importlib.resources (its import alone costs node-check about 8 ms) only for a package
    that is not plain files (a zip)."""
    import os
    import sys

    module = sys.modules.get(package)
    where = getattr(module, "__file__", None)
    if where:
        try:
            with open(os.path.join(os.path.dirname(where), *parts), encoding="utf-8") as fh:
                return fh.read()
        except FileNotFoundError:
            return None
        except OSError:  # pragma: no cover - not a directory: a zip import
            pass
    from importlib import resources  # pragma: no cover - the same, from a zip

    f = resources.files(package).joinpath(*parts)  # pragma: no cover
    return f.read_text(encoding="utf-8") if f.is_file() else None  # pragma: no cover


def read_text(path: str, label: str) -> str:
    """The text of a UTF-8 file of at most :data:`MAX_FILE_BYTES`."""
    try:
        with open(path, "rb") as fh:
            raw = fh.read(MAX_FILE_BYTES + 1)
        if len(raw) > MAX_FILE_BYTES:
            raise ConfigError(f"{label} {path}: larger than {MAX_FILE_BYTES // (1024 * 1024)} MiB: refused")
        return raw.decode("utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{label} {path}: cannot read: {getattr(e, 'strerror', None) or e}") from None


# ------------------------------------------------------------------------------ packaged YAML
#: the package's YAML files (its package data), parsed into ``clusterkit/_packaged_yaml.py``
PACKAGED_GLOBS = ("profiles/*.yaml", "sim/*.yaml", "data/*.yaml")
PACKAGED_MODULE = "clusterkit/_packaged_yaml.py"
WRITE_PACKAGED = "python -m clusterkit.config --write-packaged"


def _digest(text: str) -> str:
    import hashlib

    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def packaged(text: str) -> Any:
    """The parsed form of ``text`` when it is exactly the text of a YAML file packaged with
    clusterkit (kept in the generated ``clusterkit._packaged_yaml``, keyed by its SHA-256), a
    fresh copy on every call; None for any other text (then the YAML parser reads it). Parsing a
    built-in profile or the Xid catalog costs the YAML import and its pure-Python composer:
    tens of milliseconds on every node-check."""
    if len(text) > MAX_FILE_BYTES:
        return None
    try:
        from clusterkit._packaged_yaml import PARSED
    except ImportError:  # pragma: no cover - only while it is being regenerated
        return None
    hit = PARSED.get(_digest(text))
    return hit[1]() if hit is not None else None


def _plain(value: Any, where: str) -> None:
    """Only what a Python literal writes back as it was: no dates, no infinities."""
    import math

    if isinstance(value, dict):
        for k, v in value.items():
            _plain(k, where)
            _plain(v, where)
    elif isinstance(value, list):
        for v in value:
            _plain(v, where)
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{where}: {value!r} has no literal")
    elif value is not None and not isinstance(value, (bool, int, str)):
        raise ValueError(f"{where}: a {type(value).__name__} has no literal here")


def packaged_source() -> str:
    """The text of ``_packaged_yaml.py`` for the package's YAML files as they are now."""
    import glob
    import os
    import pprint

    import yaml

    root = os.path.dirname(os.path.abspath(__file__))
    files = sorted(p for pattern in PACKAGED_GLOBS for p in glob.glob(os.path.join(root, pattern)))
    lines = [
        f'"""Generated by ``{WRITE_PACKAGED}``: do not edit.',
        "",
        "The YAML files packaged with clusterkit (built-in profiles, the built-in sim fleet, the Xid",
        "catalog), parsed, keyed by the SHA-256 of their text: ``clusterkit.config.packaged`` answers",
        "from here for exactly those texts, so that node-check does not import and run the YAML",
        'parser on every run. Any other text (an edited file) goes through the parser."""',
        "",
        "from __future__ import annotations",
        "",
        "from typing import Any, Callable",
        "",
    ]
    entries = []
    for i, path in enumerate(files):
        rel = os.path.relpath(path, root).replace(os.sep, "/")
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
        data = _parse(text, rel)
        if data != yaml.safe_load(text):  # the Xid catalog is read with yaml.safe_load
            raise ValueError(f"{rel}: the strict loader and yaml.safe_load disagree")
        _plain(data, rel)
        body = pprint.pformat(data, indent=1, width=110, sort_dicts=False).replace("\n", "\n" + " " * 12)
        lines += ["", f"def _{i}() -> Any:  # {rel}", f"    return ({body})", ""]
        entries.append(f"    {_digest(text)!r}: ({rel!r}, _{i}),")
    lines += ["", "PARSED: dict[str, tuple[str, Callable[[], Any]]] = {", *entries, "}"]
    return "\n".join(lines) + "\n"


def _main(argv: list[str]) -> int:
    import os

    from clusterkit._generated import write_or_check

    return write_or_check(argv, what="packaged", command="python -m clusterkit.config",
                          path=os.path.join(os.path.dirname(os.path.abspath(__file__)), "_packaged_yaml.py"),
                          shown=PACKAGED_MODULE, source=packaged_source)


if __name__ == "__main__":  # pragma: no cover - the command itself is run by its test
    import sys

    sys.exit(_main(sys.argv[1:]))
