"""Hardware SKU profiles: expected hardware and floors, as data files.

A profile is a built-in name (``h100-sxm``, ``h200-sxm``: YAML files beside this module) or the
path of a user's own YAML file with the same keys. Unknown keys and wrong types are refused with
one line naming the file and the key (:class:`ConfigError`).
"""

from __future__ import annotations

import os
from importlib import resources
from typing import Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from clusterkit.errors import ConfigError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class GpuProfile(_Strict):
    count: int = Field(ge=0)
    model_patterns: list[str] = Field(default_factory=list)
    memory_total_mib_min: Optional[int] = Field(default=None, ge=0)
    pcie_gen: Optional[int] = Field(default=None, ge=1, le=7)
    pcie_width: Optional[int] = Field(default=None, ge=1, le=32)
    power_limit_w: Optional[float] = Field(default=None, gt=0)
    temp_warn_c: Optional[float] = None
    temp_fail_c: Optional[float] = None
    ecc_required: bool = True
    persistence_required: bool = True
    remapped_uncorrectable_warn: int = Field(default=1, ge=1)
    driver_min: Optional[str] = None


class PathRule(_Strict):
    path: str
    free_gib_min: Optional[float] = Field(default=None, ge=0)
    free_pct_min: Optional[float] = Field(default=None, ge=0, le=100)


class SystemProfile(_Strict):
    memory_gib_min: Optional[float] = Field(default=None, ge=0)
    cpus_min: Optional[int] = Field(default=None, ge=0)
    load_per_cpu_warn: Optional[float] = Field(default=None, gt=0)
    paths: list[PathRule] = Field(default_factory=list)


class Profile(_Strict):
    name: str
    description: str = ""
    gpu: Optional[GpuProfile] = None
    system: SystemProfile = Field(default_factory=SystemProfile)


def builtin_names() -> list[str]:
    return sorted(
        p.name[:-5] for p in resources.files(__name__).iterdir() if p.name.endswith(".yaml")
    )


def _read_builtin(name: str) -> str | None:
    f = resources.files(__name__) / f"{name}.yaml"
    return f.read_text(encoding="utf-8") if f.is_file() else None


def parse_profile(text: str, origin: str) -> Profile:
    """A Profile from YAML or JSON text; ``origin`` names it in error messages."""
    if text.lstrip().startswith("{"):  # the controller sends JSON: skip the YAML parser
        import json

        try:
            return Profile.model_validate(json.loads(text))
        except (ValueError, ValidationError):
            pass  # fall through for the YAML parser's error messages
    from clusterkit.config import load_yaml_model

    return load_yaml_model(text, Profile, f"profile {origin}")


def load_profile(spec: str) -> Profile:
    """Load a built-in profile by name, or a user's profile file by path."""
    text = _read_builtin(spec) if os.sep not in spec and not spec.endswith((".yaml", ".yml", ".json")) else None
    if text is not None:
        return parse_profile(text, spec)
    if not os.path.exists(spec):
        raise ConfigError(
            f"profile {spec!r}: no such built-in profile ({', '.join(builtin_names())}) or file"
        )
    from clusterkit.config import read_text

    text = read_text(spec, "profile")
    return parse_profile(text, spec)
