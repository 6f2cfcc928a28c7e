"""Reading the user's YAML files (profiles, inventories, sim fleets) into strict models.

Every problem becomes one :class:`ConfigError` line naming the file and, where known, the line
or the key: ``inventory fleet.yaml: nodes.0.port: Input should be a valid integer``.
"""

from __future__ import annotations

from typing import TypeVar

from pydantic import BaseModel, ValidationError

from clusterkit.errors import ConfigError

M = TypeVar("M", bound=BaseModel)


def first_error(e: ValidationError) -> str:
    """One line for the first problem pydantic found: 'gpu.count: Input should be ...'."""
    errs = e.errors()
    if not errs:  # pragma: no cover
        return str(e).splitlines()[0]
    err = errs[0]
    loc = ".".join(str(p) for p in err.get("loc", ())) or "(top)"
    more = f" (and {len(errs) - 1} more)" if len(errs) > 1 else ""
    return f"{loc}: {err.get('msg', 'invalid')}{more}"


def load_yaml_model(text: str, model: type[M], label: str, expected: str = "a mapping of keys") -> M:
    """Validate YAML (or JSON) ``text`` as ``model``; ``label`` ('profile my.yaml') starts errors."""
    import yaml

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise ConfigError(f"{label}{where}: {getattr(e, 'problem', None) or 'not valid YAML'}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{label}: expected {expected}, got {type(data).__name__}")
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise ConfigError(f"{label}: {first_error(e)}") from None


def read_text(path: str, label: str) -> str:
    try:
        with open(path, encoding="utf-8") as fh:
            return fh.read()
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{label} {path}: cannot read: {getattr(e, 'strerror', None) or e}") from None
