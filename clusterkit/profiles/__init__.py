"""Hardware SKU profiles: expected hardware and floors, as data files.

A profile is a built-in name (``h100-sxm``, ``h200-sxm``: YAML files beside this module) or the
path of a user's own YAML file with the same keys. Unknown keys and wrong types are refused with
one line naming the file and the key (:class:`ConfigError`).
"""

from __future__ import annotations

import os
from importlib import resources
from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from clusterkit.config import MAX_CPUS, MAX_GPUS, MAX_PATHS, Bool, Int, Num, invalid
from clusterkit.errors import ConfigError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class GpuProfile(_Strict):
    count: Int = Field(ge=0, le=MAX_GPUS)
    model_patterns: list[str] = Field(default_factory=list, max_length=256)
    memory_total_mib_min: Optional[Int] = Field(default=None, ge=0)
    pcie_gen: Optional[Int] = Field(default=None, ge=1, le=7)
    pcie_width: Optional[Int] = Field(default=None, ge=1, le=32)
    power_limit_w: Optional[Num] = Field(default=None, gt=0)
    temp_warn_c: Optional[Num] = None
    temp_fail_c: Optional[Num] = None
    ecc_required: Bool = True
    persistence_required: Bool = True
    remapped_uncorrectable_warn: Int = Field(default=1, ge=1)
    driver_min: Optional[str] = None

    @model_validator(mode="after")
    def _warn_below_fail(self) -> "GpuProfile":
        if self.temp_warn_c is not None and self.temp_fail_c is not None and self.temp_warn_c > self.temp_fail_c:
            raise invalid(f"temp_warn_c ({self.temp_warn_c:g}) is above temp_fail_c ({self.temp_fail_c:g}): "
                          "the warning must come first")
        return self


class PathRule(_Strict):
    path: str = Field(min_length=1)
    free_gib_min: Optional[Num] = Field(default=None, ge=0)
    free_pct_min: Optional[Num] = Field(default=None, ge=0, le=100)


class SystemProfile(_Strict):
    memory_gib_min: Optional[Num] = Field(default=None, ge=0)
    cpus_min: Optional[Int] = Field(default=None, ge=0, le=MAX_CPUS)
    #: The status of ``system.memory`` / ``system.cpus`` below their floors. Host memory and CPU
    #: counts differ between OEM builds of one SKU (HGX H100 nodes ship with 1 TiB or 2 TiB), so
    #: a node below the floor is ``warn`` by default; a site profile sets ``fail`` to make its
    #: exact build a hard floor.
    floor_status: Literal["warn", "fail"] = "warn"
    load_per_cpu_warn: Optional[Num] = Field(default=None, gt=0)
    paths: list[PathRule] = Field(default_factory=list, max_length=MAX_PATHS)


class Profile(_Strict):
    name: str = Field(min_length=1)
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
    from clusterkit.config import check_size, load_yaml_model

    label = f"profile {origin}"
    check_size(text, label)
    if text.lstrip().startswith("{"):  # the controller sends JSON: skip the YAML parser
        import json

        def no_duplicates(pairs: list[tuple[str, object]]) -> dict[str, object]:
            out = dict(pairs)
            if len(out) != len(pairs):
                raise ValueError("duplicate key")
            return out

        try:
            return Profile.model_validate(json.loads(text, object_pairs_hook=no_duplicates))
        except (ValueError, ValidationError, RecursionError):
            pass  # fall through for the YAML parser's error messages
    return load_yaml_model(text, Profile, label)


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
