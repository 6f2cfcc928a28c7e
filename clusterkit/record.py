"""Records: the data models of what a node builds, in the standard library only.

node-check runs on every node every few minutes (Slurm's HealthCheckProgram, Telegraf's exec
input), and its budget is a few tenths of a second. pydantic 2 costs about 0.2 s before its
first model on such a node (its import, pydantic-core's schemas, the plugin loader's scan of
every installed distribution), more than half of that budget, so the models node-check builds
are Records instead: check results and node reports, profiles, the simulator's fleet file,
every domain's measurement and every parser's result. The controller's own documents and input
files stay pydantic models (inventories, deploy specs, templates, the ledger); a Record nests in
them as a field type (``__get_pydantic_core_schema__``), so pydantic is the boundary's
validator there and a Record never imports it.

A Record is declared as a pydantic model is, with the subset of its API clusterkit uses::

    class MountRule(Record):
        model_config = ConfigDict(extra="forbid")
        path: str = Field(min_length=1, pattern=r"^/")
        fstype: Optional[Union[str, list[str]]] = None
        free_gib_min: Optional[Num] = Field(default=None, ge=0)

        @field_validator("path")
        @classmethod
        def _no_dots(cls, v: str) -> str: ...

        @model_validator(mode="after")
        def _consistent(self) -> "MountRule": ...

Types: ``int``, ``float``, ``bool``, ``str``, ``Any``, ``None``, ``Optional``/``Union``,
``Literal``, ``Enum`` classes, ``list``/``tuple``/``set``/``dict`` of those, other Records,
and ``Annotated`` with :func:`Field` constraints or :data:`STRICT` / :data:`FINITE` (the
markers behind ``clusterkit.config``'s ``Int``/``Num``/``Bool``, which pydantic models honour
too). Coercion follows pydantic's lax mode (``"7"`` is 7 for an ``int``, ``1`` is True for a
``bool``, a tuple is a list); :data:`STRICT` turns it off. Constraints: ``ge``/``gt``/``le``/
``lt``, ``min_length``/``max_length``, ``pattern`` (searched, as pydantic does).

Errors are pydantic's, word for word: :class:`ValidationError` has ``errors()`` with ``loc``,
``msg`` and ``type`` (``nodes.0.port: Input should be a valid integer``), every problem of the
input, not only the first. A validator raises :class:`Invalid` for a message shown as it is
(``ValueError`` shows as ``Value error, ...``, as in pydantic). Defaults are not validated
unless ``Field(validate_default=True)``. Methods: ``model_validate``, ``model_validate_json``,
``model_dump`` (``mode``, ``by_alias``, ``exclude_none``, ``exclude_unset``),
``model_dump_json``, ``model_copy``, ``model_construct``; ``model_fields``,
``model_fields_set``. Config: ``extra`` (``"ignore"``, the default, or ``"forbid"``),
``frozen``, ``populate_by_name``; pydantic's other keys are accepted and mean nothing here.
"""

from __future__ import annotations

import enum
import json
import math
import re
import sys
import types
import typing
from typing import Any, Callable, ClassVar, Iterator, Optional, Union

__all__ = ["Record", "Field", "ConfigDict", "field_validator", "model_validator", "ValidationError",
           "Invalid", "STRICT", "FINITE", "FieldInfo"]

_MISSING: Any = object()


class Invalid(ValueError):
    """Raised by a validator: the message is shown as it is (pydantic's PydanticCustomError)."""


class ValidationError(ValueError):
    """Every problem of one input: ``errors()`` lists dicts with ``loc``, ``msg``, ``type``,
    ``input``, as pydantic's ValidationError does; ``str()`` is pydantic's layout."""

    def __init__(self, title: str, errors: list[dict[str, Any]]) -> None:
        self.title = title
        self._errors = errors
        super().__init__(str(self))

    def errors(self) -> list[dict[str, Any]]:
        return [dict(e) for e in self._errors]

    def error_count(self) -> int:
        return len(self._errors)

    def __str__(self) -> str:
        n = len(self._errors)
        lines = [f"{n} validation error{'s' if n != 1 else ''} for {self.title}"]
        for e in self._errors:
            lines.append(".".join(str(p) for p in e["loc"]) or "(top)")
            lines.append(f"  {e['msg']} [type={e['type']}]")
        return "\n".join(lines)


class _Fail(Exception):
    """Inside validation: problems as (loc, type, msg, input), loc relative to the value."""

    def __init__(self, errors: list[tuple[tuple[Any, ...], str, str, Any]]) -> None:
        self.errors = errors


def _fail(typ: str, msg: str, value: Any) -> _Fail:
    return _Fail([((), typ, msg, value)])


def _nested(e: ValidationError) -> _Fail:
    """A nested Record's problems, to be placed under the field that holds it."""
    return _Fail([(tuple(err["loc"]), err["type"], err["msg"], err.get("input")) for err in e._errors])


def _raised(e: BaseException) -> tuple[str, str]:
    """(type, message) of what a validator raised, as pydantic words it."""
    if isinstance(e, Invalid):
        return "invalid", str(e)
    if isinstance(e, AssertionError):
        return "assertion_error", f"Assertion failed, {e}"
    return "value_error", f"Value error, {e}"


class _Marker:
    """Annotated metadata that Records and pydantic models both read."""

    def __init__(self, name: str, key: str, value: Any) -> None:
        self.name, self.key, self.value = name, key, value

    def __repr__(self) -> str:  # pragma: no cover - cosmetic
        return self.name

    def __get_pydantic_core_schema__(self, source: Any, handler: Any) -> Any:
        schema = handler(source)
        schema[self.key] = self.value
        return schema


#: Annotated metadata: no coercion (``true`` is not 1, ``"8"`` is not 8; an int is a float)
STRICT = _Marker("STRICT", "strict", True)
#: Annotated metadata: no ``inf``/``nan``
FINITE = _Marker("FINITE", "allow_inf_nan", False)


class FieldInfo:
    """A field's declaration: default, constraints, alias (what :func:`Field` returns)."""

    __slots__ = ("default", "default_factory", "alias", "ge", "gt", "le", "lt", "min_length", "max_length",
                 "pattern", "validate_default", "description", "annotation")

    def __init__(self, default: Any = _MISSING, *, default_factory: Optional[Callable[[], Any]] = None,
                 alias: Optional[str] = None, ge: Any = None, gt: Any = None, le: Any = None, lt: Any = None,
                 min_length: Optional[int] = None, max_length: Optional[int] = None,
                 pattern: Optional[str] = None, validate_default: bool = False,
                 description: Optional[str] = None) -> None:
        self.default = default if default is not Ellipsis else _MISSING
        self.default_factory = default_factory
        self.alias = alias
        self.ge, self.gt, self.le, self.lt = ge, gt, le, lt
        self.min_length, self.max_length, self.pattern = min_length, max_length, pattern
        self.validate_default = validate_default
        self.description = description
        self.annotation: Any = None

    def is_required(self) -> bool:
        return self.default is _MISSING and self.default_factory is None

    def get_default(self) -> Any:
        if self.default_factory is not None:
            return self.default_factory()
        if isinstance(self.default, (list, dict, set)):  # each instance its own (pydantic copies too)
            import copy

            return copy.deepcopy(self.default)
        return self.default

    def constraints(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in ("ge", "gt", "le", "lt", "min_length", "max_length", "pattern")
                if getattr(self, k) is not None}

    def __repr__(self) -> str:  # pragma: no cover - cosmetic
        return f"FieldInfo(annotation={self.annotation!r}, required={self.is_required()})"


def Field(default: Any = _MISSING, **kwargs: Any) -> Any:  # noqa: N802 - pydantic's spelling
    """A field with a default, constraints or an alias (``Field(default=0, ge=0)``)."""
    return FieldInfo(default, **kwargs)


def ConfigDict(**kwargs: Any) -> dict[str, Any]:  # noqa: N802 - pydantic's spelling
    return dict(kwargs)


class _Decl:
    """A validator declared by :func:`field_validator` / :func:`model_validator`."""

    def __init__(self, kind: str, fields: tuple[str, ...], mode: str, func: Any) -> None:
        self.kind, self.fields, self.mode, self.func = kind, fields, mode, func


def field_validator(*fields: str, mode: str = "after") -> Callable[[Any], Any]:
    """A classmethod ``(cls, v)`` or ``(cls, v, info)`` run on those fields' values (``mode``:
    ``after`` type validation, or ``before`` it); ``info.data`` holds the fields validated so far."""
    def deco(func: Any) -> Any:
        return _Decl("field", fields, mode, func)

    return deco


def model_validator(*, mode: str) -> Callable[[Any], Any]:
    """``mode="after"``: a method ``(self) -> self`` run once every field is valid;
    ``mode="before"``: a classmethod ``(cls, data) -> data`` run on the raw input."""
    def deco(func: Any) -> Any:
        return _Decl("model", (), mode, func)

    return deco


class _Info:
    __slots__ = ("data", "field_name")

    def __init__(self, data: dict[str, Any], field_name: str) -> None:
        self.data = data
        self.field_name = field_name


# ------------------------------------------------------------------------ type validators
_UNION_TYPE: Any = getattr(types, "UnionType", Union)  # int | None (Python 3.10+)
Validator = Callable[[Any], Any]
_BOOL_TRUE = frozenset({"1", "on", "t", "true", "y", "yes"})
_BOOL_FALSE = frozenset({"0", "off", "f", "false", "n", "no"})
_INT_RE = re.compile(r"^[+-]?\d+$")


def _num_text(x: Any) -> str:
    return str(x)


def _one_of(values: list[Any]) -> str:
    shown = [repr(v) if isinstance(v, str) else str(v) for v in values]
    return shown[0] if len(shown) == 1 else f"{', '.join(shown[:-1])} or {shown[-1]}"


def _v_int(strict: bool) -> Validator:
    def v(x: Any) -> Any:
        if type(x) is int:
            return x
        if isinstance(x, bool):
            if strict:
                raise _fail("int_type", "Input should be a valid integer", x)
            return int(x)
        if isinstance(x, int):
            return int(x)
        if strict:
            raise _fail("int_type", "Input should be a valid integer", x)
        if isinstance(x, float):
            if x.is_integer():
                return int(x)
            if math.isfinite(x):
                raise _fail("int_from_float", "Input should be a valid integer, got a number with a fractional "
                            "part", x)
            raise _fail("finite_number", "Input should be a finite number", x)
        if isinstance(x, str):
            s = x.strip().replace("_", "") if "__" not in x else x
            if _INT_RE.match(s):
                return int(s)
            raise _fail("int_parsing", "Input should be a valid integer, unable to parse string as an integer", x)
        raise _fail("int_type", "Input should be a valid integer", x)

    return v


def _v_float(strict: bool, finite: bool) -> Validator:
    def v(x: Any) -> Any:
        if isinstance(x, bool) and strict:
            raise _fail("float_type", "Input should be a valid number", x)
        if isinstance(x, (int, float)):
            f = float(x)
        elif strict:
            raise _fail("float_type", "Input should be a valid number", x)
        elif isinstance(x, str):
            try:
                f = float(x.strip())
            except ValueError:
                raise _fail("float_parsing", "Input should be a valid number, unable to parse string as a number",
                            x) from None
        else:
            raise _fail("float_type", "Input should be a valid number", x)
        if finite and not math.isfinite(f):
            raise _fail("finite_number", "Input should be a finite number", x)
        return f

    return v


def _v_bool(strict: bool) -> Validator:
    def v(x: Any) -> Any:
        if isinstance(x, bool):
            return x
        if strict:
            raise _fail("bool_type", "Input should be a valid boolean", x)
        if isinstance(x, (int, float)) and x in (0, 1):
            return bool(x)
        if isinstance(x, str):
            s = x.strip().lower()
            if s in _BOOL_TRUE:
                return True
            if s in _BOOL_FALSE:
                return False
        if isinstance(x, (int, str)) or (isinstance(x, float) and x.is_integer()):
            raise _fail("bool_parsing", "Input should be a valid boolean, unable to interpret input", x)
        raise _fail("bool_type", "Input should be a valid boolean", x)

    return v


def _v_str(x: Any) -> Any:
    if type(x) is str:
        return x
    if isinstance(x, str):
        return x.value if isinstance(x, enum.Enum) else str(x)
    raise _fail("string_type", "Input should be a valid string", x)


def _v_any(x: Any) -> Any:
    return x


def _v_none(x: Any) -> Any:
    if x is None:
        return None
    raise _fail("none_required", "Input should be None", x)


def _v_literal(values: tuple[Any, ...]) -> Validator:
    def v(x: Any) -> Any:
        for want in values:
            if x == want and type(x) is type(want):
                return want
        raise _fail("literal_error", f"Input should be {_one_of(list(values))}", x)

    return v


def _v_enum(cls: type[enum.Enum]) -> Validator:
    members = list(cls)
    text = _one_of([m.value for m in members])
    by_value = {m.value: m for m in members}

    def v(x: Any) -> Any:
        if isinstance(x, cls):
            return x
        try:
            hit = by_value.get(x)
        except TypeError:  # unhashable
            hit = None
        if hit is not None and type(x) is type(hit.value):
            return hit
        try:
            return cls(x)
        except (ValueError, TypeError):
            raise _fail("enum", f"Input should be {text}", x) from None

    return v


def _v_seq(item: Validator, out: type, strict: bool) -> Validator:
    accepted: tuple[type, ...] = (list,) if strict and out is list else (list, tuple, set, frozenset)
    name = out.__name__

    def v(x: Any) -> Any:
        if not isinstance(x, accepted) or isinstance(x, str):
            raise _fail(f"{name}_type", f"Input should be a valid {name}", x)
        values = []
        errors: list[tuple[tuple[Any, ...], str, str, Any]] = []
        items: Any = x
        for i, e in enumerate(items):
            try:
                values.append(item(e))
            except _Fail as f:
                errors.extend(((i, *loc), t, m, inp) for loc, t, m, inp in f.errors)
        if errors:
            raise _Fail(errors)
        return values if out is list else out(values)

    return v


def _v_tuple_fixed(items: list[Validator]) -> Validator:
    def v(x: Any) -> Any:
        if not isinstance(x, (list, tuple)):
            raise _fail("tuple_type", "Input should be a valid tuple", x)
        if len(x) > len(items):
            raise _fail("too_long", f"Tuple should have at most {len(items)} item{'s' if len(items) != 1 else ''} "
                        f"after validation, not {len(x)}", x)
        values = []
        errors: list[tuple[tuple[Any, ...], str, str, Any]] = []
        for i, (e, item) in enumerate(zip(x, items)):
            try:
                values.append(item(e))
            except _Fail as f:
                errors.extend(((i, *loc), t, m, inp) for loc, t, m, inp in f.errors)
        errors.extend(((i,), "missing", "Field required", x) for i in range(len(x), len(items)))
        if errors:
            raise _Fail(errors)
        return tuple(values)

    return v


def _v_dict(key: Validator, value: Validator) -> Validator:
    def v(x: Any) -> Any:
        if not isinstance(x, dict):
            raise _fail("dict_type", "Input should be a valid dictionary", x)
        out = {}
        errors: list[tuple[tuple[Any, ...], str, str, Any]] = []
        for k, e in x.items():
            try:
                kk = key(k)
            except _Fail as f:
                errors.extend(((k, "[key]", *loc), t, m, inp) for loc, t, m, inp in f.errors)
                continue
            try:
                out[kk] = value(e)
            except _Fail as f:
                errors.extend(((k, *loc), t, m, inp) for loc, t, m, inp in f.errors)
        if errors:
            raise _Fail(errors)
        return out

    return v


def _v_union(members: list[tuple[str, Any, Validator]]) -> Validator:
    def v(x: Any) -> Any:
        for _label, tp, val in members:  # an exact type first (pydantic's smart mode)
            if isinstance(tp, type) and type(x) is tp:
                return val(x)
        errors: list[tuple[tuple[Any, ...], str, str, Any]] = []
        for label, _tp, val in members:
            try:
                return val(x)
            except _Fail as f:
                errors.extend(((label, *loc), t, m, inp) for loc, t, m, inp in f.errors)
        raise _Fail(errors)

    return v


def _v_nullable(inner: Validator) -> Validator:
    def v(x: Any) -> Any:
        return None if x is None else inner(x)

    return v


def _v_record(cls: type["Record"]) -> Validator:
    def v(x: Any) -> Any:
        if isinstance(x, cls):
            return x
        if isinstance(x, dict):
            try:
                return cls._from_dict(x)
            except ValidationError as e:
                raise _nested(e) from None
        raise _fail("model_type", f"Input should be a valid dictionary or instance of {cls.__name__}", x)

    return v


def _v_instance(tp: type) -> Validator:
    def v(x: Any) -> Any:
        if isinstance(x, tp):
            return x
        raise _fail("is_instance_of", f"Input should be an instance of {tp.__name__}", x)

    return v


def _constrained(inner: Validator, c: dict[str, Any]) -> Validator:
    ge, gt, le, lt = c.get("ge"), c.get("gt"), c.get("le"), c.get("lt")
    lo_len, hi_len, pattern = c.get("min_length"), c.get("max_length"), c.get("pattern")
    rx = re.compile(pattern) if pattern is not None else None

    def v(x: Any) -> Any:
        if hi_len is not None and isinstance(x, (list, tuple, set, frozenset)) and len(x) > hi_len:
            inner(x[:0] if isinstance(x, (list, tuple)) else type(x)())  # the type's own error first
            _too_long(x, hi_len)  # before the items, as pydantic does
        x = inner(x)
        if x is None:
            return x
        if ge is not None and x < ge:
            raise _fail("greater_than_equal", f"Input should be greater than or equal to {_num_text(ge)}", x)
        if gt is not None and x <= gt:
            raise _fail("greater_than", f"Input should be greater than {_num_text(gt)}", x)
        if le is not None and x > le:
            raise _fail("less_than_equal", f"Input should be less than or equal to {_num_text(le)}", x)
        if lt is not None and x >= lt:
            raise _fail("less_than", f"Input should be less than {_num_text(lt)}", x)
        if lo_len is not None or hi_len is not None:
            n = len(x)
            if isinstance(x, str):
                if lo_len is not None and n < lo_len:
                    raise _fail("string_too_short", f"String should have at least {lo_len} "
                                f"character{'s' if lo_len != 1 else ''}", x)
                if hi_len is not None and n > hi_len:
                    raise _fail("string_too_long", f"String should have at most {hi_len} "
                                f"character{'s' if hi_len != 1 else ''}", x)
            else:
                what = "Dictionary" if isinstance(x, dict) else type(x).__name__.capitalize()
                if lo_len is not None and n < lo_len:
                    raise _fail("too_short", f"{what} should have at least {lo_len} "
                                f"item{'s' if lo_len != 1 else ''} after validation, not {n}", x)
                if hi_len is not None and n > hi_len:
                    _too_long(x, hi_len)
        if rx is not None and isinstance(x, str) and not rx.search(x):
            raise _fail("string_pattern_mismatch", f"String should match pattern '{pattern}'", x)
        return x

    return v


def _too_long(x: Any, hi_len: int) -> None:
    what = "Dictionary" if isinstance(x, dict) else type(x).__name__.capitalize()
    shown = "more" if isinstance(x, dict) else str(len(x))
    raise _fail("too_long", f"{what} should have at most {hi_len} item{'s' if hi_len != 1 else ''} after "
                f"validation, not {shown}", x)


def _label(tp: Any) -> str:
    """pydantic's name of a union member in an error's location: str, list[str], Fault."""
    origin = typing.get_origin(tp)
    if origin is typing.Annotated:
        return _label(typing.get_args(tp)[0])
    if origin is not None:
        args = ", ".join(_label(a) for a in typing.get_args(tp))
        name = getattr(origin, "__name__", str(origin))
        return f"{name}[{args}]"
    if tp is type(None):
        return "none"
    return getattr(tp, "__name__", str(tp))


def _compile(tp: Any, strict: bool = False, finite: bool = False,
             constraints: Optional[dict[str, Any]] = None) -> Validator:
    """The validator of type ``tp`` (with Annotated metadata and Field constraints)."""
    origin = typing.get_origin(tp)
    if origin is typing.Annotated:
        base, *meta = typing.get_args(tp)
        c = dict(constraints or {})
        for m in meta:
            if m is STRICT:
                strict = True
            elif m is FINITE:
                finite = True
            elif isinstance(m, FieldInfo):
                c.update(m.constraints())
        return _compile(base, strict, finite, c)
    v = _compile_bare(tp, origin, strict, finite)
    return _constrained(v, constraints) if constraints else v


def _compile_bare(tp: Any, origin: Any, strict: bool, finite: bool) -> Validator:
    if tp is Any or tp is object:
        return _v_any
    if tp is None or tp is type(None):
        return _v_none
    if origin is Union or origin is _UNION_TYPE:
        args = typing.get_args(tp)
        rest = [a for a in args if a is not type(None)]
        if len(rest) < len(args):
            inner = _compile(rest[0], strict, finite) if len(rest) == 1 else _compile(Union[tuple(rest)], strict,
                                                                                        finite)
            return _v_nullable(inner)
        return _v_union([(_label(a), a, _compile(a, strict, finite)) for a in args])
    if origin is typing.Literal:
        return _v_literal(typing.get_args(tp))
    if origin in (list, set, frozenset) or tp in (list, set, frozenset):
        args = typing.get_args(tp)
        item = _compile(args[0], strict, finite) if args else _v_any
        return _v_seq(item, origin or tp, strict)
    if origin is tuple or tp is tuple:
        args = typing.get_args(tp)
        if not args or (len(args) == 2 and args[1] is Ellipsis):
            return _v_seq(_compile(args[0], strict, finite) if args else _v_any, tuple, strict)
        return _v_tuple_fixed([_compile(a, strict, finite) for a in args])
    if origin is dict or tp is dict:
        args = typing.get_args(tp)
        if args:
            return _v_dict(_compile(args[0], strict, finite), _compile(args[1], strict, finite))
        return _v_dict(_v_any, _v_any)
    if isinstance(tp, type):
        if issubclass(tp, Record):
            return _v_record(tp)
        if issubclass(tp, enum.Enum):
            return _v_enum(tp)
        if tp is bool:
            return _v_bool(strict)
        if tp is int:
            return _v_int(strict)
        if tp is float:
            return _v_float(strict, finite)
        if tp is str:
            return _v_str
        return _v_instance(tp)
    raise TypeError(f"Record: unsupported field type {tp!r}")


def _fast_types(tp: Any, strict: bool = False, finite: bool = False) -> Optional[frozenset[type]]:
    """The exact types a value of type ``tp`` keeps as it is (its validator is the identity for
    them), or None when every value needs its validator."""
    origin = typing.get_origin(tp)
    if origin is typing.Annotated:
        base, *meta = typing.get_args(tp)
        if any(isinstance(m, FieldInfo) and m.constraints() for m in meta):
            return None
        return _fast_types(base, strict or STRICT in meta, finite or FINITE in meta)
    if tp is type(None) or tp is None:
        return frozenset({type(None)})
    if origin is Union or origin is _UNION_TYPE:
        out: set[type] = set()
        for a in typing.get_args(tp):
            f = _fast_types(a, strict, finite)
            if f is None:
                return None
            out |= f
        return frozenset(out)
    if tp in (str, int, bool):
        return frozenset({tp})
    if tp is float:
        return None if finite else frozenset({float})
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return frozenset({tp})
    return None


def _dump_kind(tp: Any) -> str:
    """How a field's value is written: ``plain`` (as it is), ``float`` (an int written as a
    float in JSON, as pydantic does), ``enum`` (its value in JSON) or ``any`` (walked)."""
    while typing.get_origin(tp) is typing.Annotated:
        tp = typing.get_args(tp)[0]
    args = set(typing.get_args(tp)) - {type(None)} if typing.get_origin(tp) in (Union, _UNION_TYPE) else {tp}
    if len(args) != 1:
        return "any"
    (one,) = args
    if one in (str, int, bool) or typing.get_origin(one) is typing.Literal:
        return "plain"
    if one is float:
        return "float"
    if isinstance(one, type) and issubclass(one, enum.Enum):
        return "enum"
    return "any"


# ------------------------------------------------------------------------------ dumping
_PLAIN = frozenset({int, str, bool, type(None)})


def _dump(value: Any, json_mode: bool, opts: dict[str, bool]) -> Any:
    t = type(value)
    if t in _PLAIN:
        return value
    if t is float:
        return None if json_mode and not math.isfinite(value) else value
    if isinstance(value, Record):
        return value._dump(json_mode, opts)
    if isinstance(value, enum.Enum):
        return value.value if json_mode else value
    if isinstance(value, dict):
        if json_mode:  # keys as JSON has them: strings (pydantic's too)
            return {_json_key(k): _dump(v, json_mode, opts) for k, v in value.items()}
        return {k: _dump(v, json_mode, opts) for k, v in value.items()}
    if isinstance(value, list):
        return [_dump(v, json_mode, opts) for v in value]
    if isinstance(value, (tuple, set, frozenset)):
        items = [_dump(v, json_mode, opts) for v in value]
        return items if json_mode else type(value)(items)
    if json_mode and isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _json_key(key: Any) -> Any:
    if type(key) is str:
        return key
    if isinstance(key, enum.Enum):
        key = key.value
    if isinstance(key, bool):
        return "true" if key else "false"
    return str(key) if isinstance(key, (int, float)) else key


def _float_json(value: Any) -> Any:
    return float(value) if type(value) is int else value


#: (module, annotation text) -> the type it names
_EVALUATED: dict[tuple[str, str], Any] = {}


#: validations of one class after which its fields are read by generated code (compiling it
#: costs about half a millisecond: worth it for the controller's thousands of CheckResults, not
#: for the one profile of a node-check)
HOT_AFTER = 64


def _generic_fill(name: str, comp: "_Compiled") -> Any:
    """``fill`` as a loop over the plan; after :data:`HOT_AFTER` calls it hands over to
    :func:`_fill_function`'s generated code."""
    calls = 0

    def fill(cls: Any, data: dict[str, Any], values: dict[str, Any], errors: list[dict[str, Any]]) -> int:
        nonlocal calls
        calls += 1
        if calls == HOT_AFTER:
            comp.fill = _fill_function(name, comp.plan)
        found = 0
        for i, (field, key, alt, info, _v, _b, _a, how, fast) in enumerate(comp.plan):
            raw = data.get(key, _MISSING)
            if raw is _MISSING and alt is not None:
                raw = data.get(alt, _MISSING)
            if raw is not _MISSING:
                found += 1
                if fast is not None and type(raw) in fast:
                    values[field] = raw
                else:
                    cls._slow(i, raw, data, values, errors)
            elif how is _REQUIRED:
                errors.append({"loc": (key,), "msg": "Field required", "type": "missing", "input": data})
            elif how is _CONSTANT:
                values[field] = info.default
            elif how is _FRESH:
                values[field] = info.get_default()
            else:
                cls._slow(i, info.get_default(), data, values, errors)
        return found

    return fill


def _fill_function(name: str, plan: list[Any]) -> Any:
    """``fill(cls, data, values, errors) -> found``: the class's fields read from ``data``, one
    block of code per field (as dataclasses writes ``__init__``): a value of a type kept as it is
    costs a dict lookup and a type test; anything else goes through ``cls._slow``."""
    ns: dict[str, Any] = {"MISSING": _MISSING}
    lines = [f"def fill(cls, data, values, errors):  # {name}", "    found = 0"]
    for i, (field, key, alt, info, _validate, _before, _after, how, fast) in enumerate(plan):
        ns[f"K{i}"], ns[f"A{i}"], ns[f"I{i}"], ns[f"F{i}"] = key, alt, info, fast
        lines.append(f"    raw = data.get(K{i}, MISSING)")
        if alt is not None:
            lines.append(f"    if raw is MISSING:\n        raw = data.get(A{i}, MISSING)")
        lines.append("    if raw is not MISSING:\n        found += 1")
        if fast is not None:
            lines.append(f"        if type(raw) in F{i}:\n            values[{field!r}] = raw\n        else:\n"
                         f"            cls._slow({i}, raw, data, values, errors)")
        else:
            lines.append(f"        cls._slow({i}, raw, data, values, errors)")
        if how is _REQUIRED:
            lines.append(f"    else:\n        errors.append({{'loc': (K{i},), 'msg': 'Field required', "
                         "'type': 'missing', 'input': data})")
        elif how is _CONSTANT:
            lines.append(f"    else:\n        values[{field!r}] = I{i}.default")
        elif how is _FRESH:
            lines.append(f"    else:\n        values[{field!r}] = I{i}.get_default()")
        else:
            lines.append(f"    else:\n        cls._slow({i}, I{i}.get_default(), data, values, errors)")
    lines.append("    return found")
    exec("\n".join(lines), ns)  # noqa: S102 - our own text, from the class's declaration
    return ns["fill"]


# how a field absent from the input is filled
_REQUIRED, _CONSTANT, _FRESH, _VALIDATED = "required", "constant", "fresh", "validated"


class _Compiled:
    """A Record class's validators and plan, built on its first use."""

    #: per field: name, input key, other accepted key, declaration, validator, before- and
    #: after-validators, how an absent one is filled, the types kept as they are
    plan: list[tuple[str, str, Optional[str], FieldInfo, Validator, Any, Any, str, Optional[frozenset[type]]]]
    #: per field: name, key written by_alias, how it is written (_dump_kind), declaration
    dumpers: list[tuple[str, str, str, FieldInfo]]
    fill: Callable[[Any, dict[str, Any], dict[str, Any], list[dict[str, Any]]], int]
    model_before: list[str]
    model_after: list[str]
    by_input: dict[str, str]  # input key -> field name
    has_alias: bool
    extra_forbid: bool


class Record:
    """Base of every Record (see the module's docstring)."""

    # the fields live in __dict__; which of them the input gave, beside it (not a field)
    __slots__ = ("__dict__", "__weakref__", "__fields_set")
    __fields_set: set[str]

    model_config: ClassVar[dict[str, Any]] = {}
    model_fields: ClassVar[dict[str, FieldInfo]] = {}
    _decls: ClassVar[dict[str, _Decl]] = {}
    _compiled: ClassVar[Optional[_Compiled]] = None
    _localns: ClassVar[Optional[dict[str, Any]]] = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        own = cls.__dict__.get("__annotations__", {})
        fields: dict[str, FieldInfo] = {}
        decls: dict[str, _Decl] = {}
        config: dict[str, Any] = {}
        for base in reversed(cls.__mro__[1:]):  # what the bases declared, nearest last
            if issubclass(base, Record) and base is not Record:
                fields.update(base.model_fields)
                decls.update(base._decls)
                config.update(base.model_config)
        for name, value in list(cls.__dict__.items()):
            if isinstance(value, _Decl):
                decls[name] = value
                setattr(cls, name, value.func)
        for name, ann in own.items():
            if name.startswith("_") or name in ("model_config", "model_fields"):
                continue
            if (ann.startswith(("ClassVar", "typing.ClassVar")) if isinstance(ann, str)
                    else typing.get_origin(ann) is ClassVar):
                continue
            default = cls.__dict__.get(name, _MISSING)
            if isinstance(default, FieldInfo):
                info = default
                delattr(cls, name)
            else:
                info = FieldInfo(default)
            fields[name] = info
        cls.model_fields = fields
        cls._decls = decls
        cls._compiled = None
        # a class declared inside a function names its neighbours from the function's locals
        cls._localns = dict(sys._getframe(1).f_locals) if "<locals>" in cls.__qualname__ else None
        # its own settings merged over the bases', as pydantic does
        cls.model_config = {**config, **cls.__dict__.get("model_config", {})}
        if cls.model_config.get("frozen"):
            cls.__hash__ = Record._frozen_hash  # type: ignore[assignment]

    # ---------------------------------------------------------------- build
    @classmethod
    def _build(cls) -> _Compiled:
        comp = cls.__dict__.get("_compiled")
        if comp is not None:
            return comp
        hints = cls._hints()
        comp = _Compiled()
        before: dict[str, list[tuple[Any, bool]]] = {}
        after: dict[str, list[tuple[Any, bool]]] = {}
        comp.model_before, comp.model_after = [], []
        for attr, d in cls._decls.items():
            if d.kind == "model":
                (comp.model_after if d.mode == "after" else comp.model_before).append(attr)
                continue
            target = before if d.mode == "before" else after
            func = d.func.__func__ if isinstance(d.func, (classmethod, staticmethod)) else d.func
            takes_info = func.__code__.co_argcount >= 3
            for f in d.fields:
                if f not in cls.model_fields:
                    raise TypeError(f"{cls.__name__}: validator {attr} names no field {f!r}")
                target.setdefault(f, []).append((getattr(cls, attr), takes_info))
        by_name = cls.model_config.get("populate_by_name")
        comp.extra_forbid = cls.model_config.get("extra") == "forbid"
        comp.has_alias = any(info.alias for info in cls.model_fields.values())
        comp.plan, comp.dumpers, comp.by_input = [], [], {}
        for name, info in cls.model_fields.items():
            tp = info.annotation = hints[name]
            if info.is_required():
                how = _REQUIRED
            elif info.validate_default:
                how = _VALIDATED
            elif info.default_factory is None and not isinstance(info.default, (list, dict, set)):
                how = _CONSTANT
            else:
                how = _FRESH
            constraints = info.constraints()
            fast = None if (before.get(name) or after.get(name) or constraints) else _fast_types(tp)
            key = info.alias or name
            alt = name if info.alias and by_name else None
            comp.by_input[key] = name
            if alt is not None:
                comp.by_input.setdefault(alt, name)
            comp.plan.append((name, key, alt, info, _compile(tp, constraints=constraints or None), before.get(name),
                              after.get(name), how, fast))
            comp.dumpers.append((name, key, _dump_kind(tp), info))
        comp.fill = _generic_fill(cls.__name__, comp)
        cls._compiled = comp
        return comp

    @classmethod
    def _hints(cls) -> dict[str, Any]:
        """The fields' types, each annotation evaluated in the module (and function) that
        declared it: typing.get_type_hints re-evaluates every class of the MRO on every call."""
        hints: dict[str, Any] = {}
        for klass in reversed(cls.__mro__):
            if not (isinstance(klass, type) and issubclass(klass, Record)) or klass is Record:
                continue
            module = sys.modules.get(klass.__module__)
            globalns = vars(module) if module is not None else {}
            for name, ann in klass.__dict__.get("__annotations__", {}).items():
                if name not in cls.model_fields:
                    continue
                if isinstance(ann, str):
                    key = (klass.__module__, ann) if klass._localns is None else None
                    tp = _EVALUATED.get(key, _MISSING) if key is not None else _MISSING
                    if tp is _MISSING:
                        tp = eval(ann, globalns, klass._localns)  # noqa: S307 - the class's own annotation
                        if isinstance(tp, str) or "ForwardRef" in repr(tp):  # a quoted name inside
                            tp = typing.get_type_hints(klass, localns=klass._localns, include_extras=True)[name]
                        if key is not None:
                            _EVALUATED[key] = tp
                    ann = tp
                hints[name] = ann
        return hints

    # ---------------------------------------------------------------- validation
    @classmethod
    def _run_validator(cls, fn: Any, takes_info: bool, value: Any, data: dict[str, Any], name: str) -> Any:
        try:
            return fn(value, _Info(data, name)) if takes_info else fn(value)
        except ValidationError as e:
            raise _nested(e) from None
        except (ValueError, TypeError, AssertionError) as e:
            raise _fail(*_raised(e), value) from None

    @classmethod
    def _slow(cls, i: int, raw: Any, data: dict[str, Any], values: dict[str, Any], errors: list[dict[str, Any]]) -> None:
        """Field ``i`` of the plan, through its validators (a value not of a type kept as it is)."""
        name, key, _alt, _info, validate, before, after, _how, _fast = cls._build().plan[i]
        try:
            if before:
                for fn, takes_info in before:
                    raw = cls._run_validator(fn, takes_info, raw, values, name)
            value = validate(raw)
            if after:
                for fn, takes_info in after:
                    value = cls._run_validator(fn, takes_info, value, values, name)
        except _Fail as f:
            errors.extend({"loc": (key, *loc), "msg": m, "type": t, "input": inp} for loc, t, m, inp in f.errors)
            return
        values[name] = value

    @classmethod
    def _from_dict(cls, data: dict[str, Any]) -> "Record":
        comp = cls.__dict__.get("_compiled") or cls._build()
        if comp.model_before:
            for attr in comp.model_before:
                try:
                    data = getattr(cls, attr)(data)
                except (ValueError, AssertionError) as e:
                    typ, msg = _raised(e)
                    raise ValidationError(cls.__name__, [{"loc": (), "msg": msg, "type": typ, "input": data}]) from None
            if not isinstance(data, dict):
                raise ValidationError(cls.__name__, [{
                    "loc": (), "type": "model_type", "input": data,
                    "msg": f"Input should be a valid dictionary or instance of {cls.__name__}"}])
        errors: list[dict[str, Any]] = []
        values: dict[str, Any] = {}
        found = comp.fill(cls, data, values, errors)
        if found == len(data) and not comp.has_alias:
            fields_set = set(data)
        else:  # unknown keys (ignored, or refused: after the fields' problems, as pydantic does)
            by_input = comp.by_input
            fields_set = {by_input[k] for k in data if isinstance(k, str) and k in by_input}
            if comp.extra_forbid:
                errors.extend({"loc": (k,), "msg": "Extra inputs are not permitted", "type": "extra_forbidden",
                               "input": v} for k, v in data.items() if not (isinstance(k, str) and k in by_input))
        if errors:
            raise ValidationError(cls.__name__, errors)
        self = cls.__new__(cls)
        object.__setattr__(self, "__dict__", values)
        object.__setattr__(self, "_Record__fields_set", fields_set)
        for attr in comp.model_after:
            try:
                out = getattr(self, attr)()
            except ValidationError:
                raise
            except (ValueError, AssertionError) as e:
                typ, msg = _raised(e)
                raise ValidationError(cls.__name__, [{"loc": (), "msg": msg, "type": typ, "input": data}]) from None
            if out is not None and out is not self:  # pragma: no cover - validators return self
                self = out
        return self

    def __init__(self, **data: Any) -> None:
        built = type(self)._from_dict(data)
        object.__setattr__(self, "__dict__", built.__dict__)
        object.__setattr__(self, "_Record__fields_set", built.__fields_set)

    @classmethod
    def model_validate(cls, obj: Any) -> Any:
        if isinstance(obj, cls):
            return obj
        if not isinstance(obj, dict):
            raise ValidationError(cls.__name__, [{
                "loc": (), "type": "model_type", "input": obj,
                "msg": f"Input should be a valid dictionary or instance of {cls.__name__}"}])
        return cls._from_dict(obj)

    @classmethod
    def model_validate_json(cls, text: Union[str, bytes]) -> Any:
        try:
            data = json.loads(text)
        except ValueError as e:
            raise ValidationError(cls.__name__, [{"loc": (), "msg": f"Invalid JSON: {e}", "type": "json_invalid",
                                                  "input": text}]) from None
        return cls.model_validate(data)

    @classmethod
    def model_construct(cls, **values: Any) -> Any:
        """An instance from trusted values, without validation (missing fields take defaults)."""
        self = cls.__new__(cls)
        out: dict[str, Any] = {}
        for name, info in cls.model_fields.items():
            if name in values:
                out[name] = values[name]
            elif not info.is_required():
                out[name] = info.get_default()
        object.__setattr__(self, "__dict__", out)
        object.__setattr__(self, "_Record__fields_set", set(values) & set(cls.model_fields))
        return self

    # ---------------------------------------------------------------- access
    @property
    def model_fields_set(self) -> set[str]:
        return self.__fields_set

    def __setattr__(self, name: str, value: Any) -> None:
        if type(self).model_config.get("frozen"):
            raise TypeError(f"{type(self).__name__} is frozen: {name} cannot be set")
        object.__setattr__(self, name, value)
        if name in type(self).model_fields:
            self.__fields_set.add(name)

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        names = type(self).model_fields
        return all(self.__dict__.get(n) == other.__dict__.get(n) for n in names)

    __hash__ = None  # type: ignore[assignment]  # a mutable record (frozen ones hash their fields)

    def _frozen_hash(self) -> int:
        return hash((type(self), tuple(_hashable(self.__dict__.get(n)) for n in type(self).model_fields)))

    def __iter__(self) -> Iterator[tuple[str, Any]]:
        for name in type(self).model_fields:
            yield name, self.__dict__.get(name)

    def __repr__(self) -> str:
        inner = ", ".join(f"{n}={self.__dict__.get(n)!r}" for n in type(self).model_fields)
        return f"{type(self).__name__}({inner})"

    def __copy__(self) -> Any:
        new = type(self).__new__(type(self))
        object.__setattr__(new, "__dict__", dict(self.__dict__))
        object.__setattr__(new, "_Record__fields_set", set(self.__fields_set))
        return new

    def __deepcopy__(self, memo: dict[int, Any]) -> Any:
        import copy

        new = type(self).__new__(type(self))
        memo[id(self)] = new
        object.__setattr__(new, "__dict__", copy.deepcopy(self.__dict__, memo))
        object.__setattr__(new, "_Record__fields_set", set(self.__fields_set))
        return new

    def __getstate__(self) -> Any:
        return dict(self.__dict__), set(self.__fields_set)

    def __setstate__(self, state: Any) -> None:
        values, fields_set = state
        object.__setattr__(self, "__dict__", values)
        object.__setattr__(self, "_Record__fields_set", fields_set)

    # ---------------------------------------------------------------- output
    def _dump(self, json_mode: bool, opts: dict[str, bool]) -> dict[str, Any]:
        values = self.__dict__
        by_alias, exclude_none, exclude_defaults = opts["by_alias"], opts["exclude_none"], opts["exclude_defaults"]
        fields_set = self.__fields_set if opts["exclude_unset"] else None
        out: dict[str, Any] = {}
        for name, alias, kind, info in type(self)._build().dumpers:
            value = values.get(name)
            if (fields_set is not None and name not in fields_set) or (value is None and exclude_none) \
                    or (exclude_defaults and not info.is_required() and value == info.get_default()):
                continue
            key = alias if by_alias else name
            if kind == "plain" or value is None:
                out[key] = value
            elif kind == "enum":
                out[key] = value.value if json_mode and isinstance(value, enum.Enum) else value
            elif kind == "float" and json_mode:
                out[key] = _float_json(value) if math.isfinite(value) else None
            else:
                out[key] = _dump(value, json_mode, opts)
        return out

    def model_dump(self, *, mode: str = "python", by_alias: bool = False, exclude_none: bool = False,
                   exclude_unset: bool = False, exclude_defaults: bool = False) -> dict[str, Any]:
        return self._dump(mode == "json", {"by_alias": by_alias, "exclude_none": exclude_none,
                                           "exclude_unset": exclude_unset, "exclude_defaults": exclude_defaults})

    def model_dump_json(self, *, indent: Optional[int] = None, by_alias: bool = False,
                        exclude_none: bool = False, exclude_unset: bool = False,
                        exclude_defaults: bool = False) -> str:
        doc = self.model_dump(mode="json", by_alias=by_alias, exclude_none=exclude_none,
                              exclude_unset=exclude_unset, exclude_defaults=exclude_defaults)
        if indent is None:
            return json.dumps(doc, ensure_ascii=False, separators=(",", ":"))
        try:  # the standard library indents in pure Python: 4x slower on a large fleet's report
            from pydantic_core import to_json
        except ImportError:  # pragma: no cover - pydantic is a dependency
            return json.dumps(doc, ensure_ascii=False, indent=indent)
        return to_json(doc, indent=indent).decode("utf-8")

    def model_copy(self, *, update: Optional[dict[str, Any]] = None, deep: bool = False) -> Any:
        import copy

        new = copy.deepcopy(self) if deep else copy.copy(self)
        for k, v in (update or {}).items():
            new.__dict__[k] = v
            new.__fields_set.add(k)
        return new

    # ---------------------------------------------------------------- pydantic's seam
    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: Any) -> Any:
        """A Record as a field of a pydantic model (the controller's documents): validated by
        :meth:`model_validate`, serialised by :meth:`model_dump`."""
        from pydantic_core import PydanticCustomError, core_schema

        def validate(value: Any) -> Any:
            try:
                return cls.model_validate(value)
            except ValidationError as e:
                first = e._errors[0]
                loc = ".".join(str(p) for p in first["loc"])
                more = f" (and {len(e._errors) - 1} more)" if len(e._errors) > 1 else ""
                raise PydanticCustomError("record", "{message}",
                                          {"message": f"{loc + ': ' if loc else ''}{first['msg']}{more}"}) from None

        def serialize(value: Any, info: Any) -> Any:
            if not isinstance(value, Record):
                return value
            return value.model_dump(mode=info.mode, by_alias=bool(info.by_alias),
                                    exclude_none=bool(info.exclude_none))

        return core_schema.no_info_plain_validator_function(
            validate, serialization=core_schema.plain_serializer_function_ser_schema(serialize, info_arg=True))


def _hashable(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_hashable(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((k, _hashable(v)) for k, v in value.items()))
    return value
