"""InfluxDB line protocol: encode one point per line, exactly per the spec; parse it back (pure).

::

    measurement[,tag_key=tag_value...] field_key=field_value[,field_key=field_value...] [timestamp]

Escaping (InfluxDB v2 "line protocol" reference, "Special characters"):

==========================================  ================================================
element                                     escaped with a backslash
==========================================  ================================================
measurement                                 comma, space (and backslash itself)
tag key, tag value, field key               comma, equals sign, space (and backslash itself)
string field value (inside ``"…"``)         double quote, backslash
==========================================  ================================================

Backslashes are escaped everywhere (``\\\\`` reads back as one backslash under the spec's rule
"with two contiguous backslashes, the first is interpreted as an escape character"), so a value
that ends in a backslash cannot swallow the separator after it.

Line breaks are not representable anywhere in line protocol. Every character that any reader
treats as a line break or control character (C0 controls, DEL, NEL, U+2028, U+2029) is replaced
by a space *before* escaping, in every element, string fields included: no value can ever make a
second line.

Field values: ``bool`` -> ``true``/``false``; ``int`` -> ``123i`` (int64 range only; a larger
int is not representable and is dropped); ``float`` -> its shortest repr, without a trailing
``.0`` (as influxdb-client writes it); NaN and ±inf are not representable and are dropped;
``str`` -> quoted. ``None`` drops the field (and the tag). A point left without a field is not
representable: :func:`encode_line` returns None.

Timestamps: clusterkit writes every point at **millisecond** precision (:data:`PRECISION`); the
write API is told ``precision=ms``. The encoder itself writes whatever integer it is given.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Optional, Union

#: the timestamp precision of every point clusterkit writes (the write API's ``precision``)
PRECISION = "ms"

FieldValue = Union[bool, int, float, str]

INT64_MIN = -(2 ** 63)
INT64_MAX = 2 ** 63 - 1

# Every character some reader takes for a line break (str.splitlines: \n \r \v \f \x1c-\x1e
# \x85 \u2028 \u2029), and the other C0 controls and DEL.
_BREAKS = re.compile("[\x00-\x1f\x7f\x85\u2028\u2029]")

_MEASUREMENT = str.maketrans({"\\": "\\\\", ",": "\\,", " ": "\\ "})
_KEY = str.maketrans({"\\": "\\\\", ",": "\\,", "=": "\\=", " ": "\\ "})
_STRING = str.maketrans({"\\": "\\\\", '"': '\\"'})


def clean(text: str) -> str:
    """``text`` with every line break and control character replaced by a space."""
    return _BREAKS.sub(" ", text)


# Names, tag values and field keys repeat across a run's points (hosts, check ids, field
# names): their escaped forms are cached. String field values are scanned once and escaped
# only when they hold something to escape.
_CACHE = 1 << 16
_STRING_SPECIAL = re.compile('[\x00-\x1f\x7f\x85\u2028\u2029\\\\"]')


@functools.lru_cache(maxsize=_CACHE)
def _clean_cached(text: str) -> str:
    return _BREAKS.sub(" ", text)


@functools.lru_cache(maxsize=_CACHE)
def escape_measurement(name: str) -> str:
    return clean(name).translate(_MEASUREMENT)


@functools.lru_cache(maxsize=_CACHE)
def escape_key(text: str) -> str:
    """A tag key, tag value or field key, escaped."""
    return clean(text).translate(_KEY)


def escape_string(text: str) -> str:
    """A string field value's content, escaped (without the surrounding quotes)."""
    if _STRING_SPECIAL.search(text) is None:
        return text
    return clean(text).translate(_STRING)


def format_float(value: float) -> str:
    s = repr(float(value))
    return s[:-2] if s.endswith(".0") else s


def encode_field_value(value: object) -> Optional[str]:
    """A field value as line protocol; None when it is not representable (NaN, ±inf, an int
    outside int64, None, another type)."""
    t = type(value)
    if t is float:
        return format_float(value) if math.isfinite(value) else None  # type: ignore[arg-type]
    if t is str:
        return f'"{escape_string(value)}"'  # type: ignore[arg-type]
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return f"{value}i" if INT64_MIN <= value <= INT64_MAX else None
    if isinstance(value, float):
        return format_float(value) if math.isfinite(value) else None
    if isinstance(value, str):
        return f'"{escape_string(value)}"'
    return None


def encode_line(measurement: str, tags: Mapping[str, Optional[str]],
                fields: Mapping[str, Optional[FieldValue]], time: Optional[int] = None) -> Optional[str]:
    """One point as one line (no trailing newline), tags and fields sorted by key.

    Tags whose key or value is empty (or None) are left out; so are fields that are not
    representable. None when no field is left. Raises ValueError for a measurement that is empty
    or starts with ``#`` (a comment line).
    """
    m = _clean_cached(measurement)
    if not m or m[0] == "#":
        raise ValueError(f"measurement {measurement!r}: empty or a comment")
    parts = [escape_measurement(m)]
    # keyed by the cleaned key: keys that become equal once cleaned give one tag (the last)
    cleaned_tags = {_clean_cached(k): v for k, v in tags.items() if k and v}
    for k in sorted(cleaned_tags):
        parts.append(f",{escape_key(k)}={escape_key(cleaned_tags[k])}")
    encoded: dict[str, str] = {}
    for k, v in fields.items():
        if k:
            ev = encode_field_value(v)
            if ev is not None:
                encoded[_clean_cached(k)] = ev
    if not encoded:
        return None
    parts.append(" ")
    parts.append(",".join([f"{escape_key(k)}={encoded[k]}" for k in sorted(encoded)]))
    if time is not None:
        parts.append(f" {int(time)}")
    return "".join(parts)


# ------------------------------------------------------------------------------- parsing
@dataclass
class ParsedLine:
    measurement: str
    tags: dict[str, str] = field(default_factory=dict)
    fields: dict[str, FieldValue] = field(default_factory=dict)
    time: Optional[int] = None


_TRUE = {"t", "T", "true", "True", "TRUE"}
_FALSE = {"f", "F", "false", "False", "FALSE"}
_INT = re.compile(r"^-?[0-9]+i$")
_UINT = re.compile(r"^[0-9]+u$")
_FLOAT = re.compile(r"^[-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][-+]?[0-9]+)?$")


def _token(line: str, i: int, stops: str, escapable: str) -> tuple[str, int]:
    """Read from ``i`` to the first unescaped character of ``stops``; ``\\`` + a character of
    ``escapable`` is that character, any other backslash is literal."""
    out: list[str] = []
    n = len(line)
    while i < n:
        ch = line[i]
        if ch == "\\" and i + 1 < n and line[i + 1] in escapable:
            out.append(line[i + 1])
            i += 2
            continue
        if ch in stops:
            break
        out.append(ch)
        i += 1
    return "".join(out), i


def _field_value(text: str) -> FieldValue:
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    if _INT.match(text):
        v = int(text[:-1])
        if not INT64_MIN <= v <= INT64_MAX:
            raise ValueError(f"integer out of range: {text}")
        return v
    if _UINT.match(text):
        return int(text[:-1])
    if _FLOAT.match(text):
        return float(text)
    raise ValueError(f"not a field value: {text!r}")


def parse_line(line: str) -> ParsedLine:
    """Parse one line of line protocol strictly (ValueError when it is not one)."""
    if not line or line.startswith("#") or "\n" in line:
        raise ValueError("empty line, comment or more than one line")
    i, n = 0, len(line)
    measurement, i = _token(line, 0, ", ", ", \\")
    if not measurement:
        raise ValueError("no measurement")
    p = ParsedLine(measurement)
    while i < n and line[i] == ",":
        key, i = _token(line, i + 1, ",= ", ",= \\")
        if i >= n or line[i] != "=" or not key:
            raise ValueError(f"tag {key!r} without '='")
        value, i = _token(line, i + 1, ",= ", ",= \\")
        if not value or (i < n and line[i] == "="):
            raise ValueError(f"tag {key!r}: empty value or unescaped '='")
        p.tags[key] = value
    if i >= n or line[i] != " ":
        raise ValueError("no field set")
    i += 1
    while True:
        key, i = _token(line, i, ",= ", ",= \\")
        if i >= n or line[i] != "=" or not key:
            raise ValueError(f"field {key!r} without '='")
        i += 1
        if i < n and line[i] == '"':
            value, i = _token(line, i + 1, '"', '"\\')
            if i >= n:
                raise ValueError(f"field {key!r}: unterminated string")
            p.fields[key] = value
            i += 1
        else:
            j = i
            while j < n and line[j] not in ", ":
                j += 1
            p.fields[key] = _field_value(line[i:j])
            i = j
        if i < n and line[i] == ",":
            i += 1
            continue
        break
    if i < n:
        if line[i] != " ":
            raise ValueError("garbage after the field set")
        rest = line[i + 1:]
        if not re.fullmatch(r"-?[0-9]+", rest):
            raise ValueError(f"bad timestamp {rest!r}")
        p.time = int(rest)
    return p
