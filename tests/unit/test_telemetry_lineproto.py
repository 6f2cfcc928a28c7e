"""Line protocol: escaping per the spec, fuzzed; agreement with influxdb-client's serializer."""

from __future__ import annotations

import math
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clusterkit.telemetry.lineproto import (
    INT64_MAX,
    INT64_MIN,
    clean,
    encode_field_value,
    encode_line,
    parse_line,
)

# Any text, including everything hostile: separators, escapes, quotes, line breaks of every
# kind, controls, and non-ASCII.
HOSTILE = st.text(alphabet=st.sampled_from(list(" ,=\\\"'#\n\r\t\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029\x00\x7f"))
                  | st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=24)
KEYS = HOSTILE
VALUES = st.one_of(
    st.booleans(),
    st.integers(min_value=INT64_MIN, max_value=INT64_MAX),
    st.floats(allow_nan=False, allow_infinity=False),
    HOSTILE,
)

# One line: measurement, optional tags, a space, fields, optional timestamp. Escaped runs are
# \ followed by any character; strings are quoted with \" and \\ inside.
_ESC = r"(?:\\.|[^\\])"
_NAME = rf"(?:\\.|[^\\ ,])+"
_KEY = rf"(?:\\.|[^\\ ,=])+"
_STR = r'"(?:\\.|[^"\\])*"'
_FV = rf"(?:{_STR}|-?[0-9]+i|true|false|[-+0-9.eE]+)"
LINE_RE = re.compile(rf"^{_NAME}(?:,{_KEY}={_KEY})* {_KEY}={_FV}(?:,{_KEY}={_FV})*(?: -?[0-9]+)?$")


@settings(max_examples=400, deadline=None)
@given(measurement=HOSTILE.filter(lambda m: not clean(m).startswith("#")),
       tags=st.dictionaries(KEYS, HOSTILE, max_size=5),
       fields=st.dictionaries(KEYS, VALUES, min_size=1, max_size=5),
       time=st.one_of(st.none(), st.integers(min_value=-(2 ** 62), max_value=2 ** 62)))
def test_round_trip_and_shape(measurement, tags, fields, time):
    line = encode_line(measurement, tags, fields, time)
    assert line is not None
    # one line for every reader: no line break of any kind, and the shape of a line
    assert line.splitlines() == [line]
    assert "\n" not in line and "\r" not in line
    assert LINE_RE.match(line), line
    p = parse_line(line)
    assert p.measurement == clean(measurement)
    assert p.tags == {clean(k): clean(v) for k, v in tags.items()}
    want = {}
    for k, v in fields.items():
        want[clean(k)] = clean(v) if isinstance(v, str) else v
    assert p.fields.keys() == want.keys()
    for k, v in want.items():
        if isinstance(v, float):
            assert isinstance(p.fields[k], float) and (p.fields[k] == v or (v == 0 and p.fields[k] == 0))
        else:
            assert p.fields[k] == v and type(p.fields[k]) is type(v)
    assert p.time == time


@settings(max_examples=300, deadline=None)
@given(value=HOSTILE)
def test_hostile_tag_values_never_break_a_line(value):
    line = encode_line("gpu", {"host": value, "device": value + "\n" + value}, {"value": 1.0, "m": value}, 1)
    assert line is not None
    assert line.splitlines() == [line]
    p = parse_line(line)
    assert p.tags["host"] == clean(value)
    assert p.fields["m"] == clean(value)


def test_spec_escaping_examples():
    line = encode_line("my measurement,x", {"tag key": "a,b=c d", "k\\": "v\\"}, {"f=k": 'say "hi" \\ there'}, 5)
    assert line == ('my\\ measurement\\,x,k\\\\=v\\\\,tag\\ key=a\\,b\\=c\\ d '
                    'f\\=k="say \\"hi\\" \\\\ there" 5')
    # a value ending in a backslash cannot swallow the separator after it
    p = parse_line(line)
    assert p.tags == {"tag key": "a,b=c d", "k\\": "v\\"}


def test_newlines_and_controls_become_spaces():
    line = encode_line("m", {"host": "a\nb\r\nc"}, {"msg": "one\ntwo\u2028three"}, 1)
    assert line == 'm,host=a\\ b\\ \\ c msg="one two three" 1'


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, INT64_MAX + 1, INT64_MIN - 1, None, object()])
def test_unrepresentable_values_are_dropped(value):
    assert encode_field_value(value) is None
    assert encode_line("m", {}, {"bad": value, "ok": 1}, 1) == "m ok=1i 1"
    # a point with no field left is not representable
    assert encode_line("m", {"t": "v"}, {"bad": value}, 1) is None


def test_field_value_types():
    assert encode_field_value(True) == "true"
    assert encode_field_value(False) == "false"
    assert encode_field_value(8) == "8i"
    assert encode_field_value(8.0) == "8"
    assert encode_field_value(26.562) == "26.562"
    assert encode_field_value(1e300) == "1e+300"
    assert encode_field_value("x") == '"x"'


def test_empty_tags_are_left_out_and_tags_sorted():
    assert encode_line("m", {"b": "2", "a": "1", "empty": "", "none": None}, {"v": 1.5}) == "m,a=1,b=2 v=1.5"


@pytest.mark.parametrize("name", ["", "#comment", "#x\ny"])
def test_measurement_that_is_empty_or_a_comment_is_refused(name):
    with pytest.raises(ValueError):
        encode_line(name, {}, {"v": 1})


@pytest.mark.parametrize("line", ["", "# comment", "m", "m v", "m v=", "m,t v=1", "m,t= v=1", 'm v="open',
                                  "m v=1 x", "m v=1 12a", "m v=abc", "m v=1\nm v=2"])
def test_parser_is_strict(line):
    with pytest.raises(ValueError):
        parse_line(line)


# ---------------------------------------------------------- agreement with influxdb-client
SAFE = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x2FF, blacklist_categories=("Cc", "Cs"),
                                      blacklist_characters="\\") | st.sampled_from([" ", ",", "=", '"']),
               min_size=1, max_size=16)
SAFE_VALUES = st.one_of(st.booleans(), st.integers(min_value=INT64_MIN, max_value=INT64_MAX),
                        st.floats(allow_nan=False, allow_infinity=False), SAFE)


@settings(max_examples=300, deadline=None)
@given(measurement=SAFE.filter(lambda m: not m.startswith("#")), tags=st.dictionaries(SAFE, SAFE, max_size=4),
       fields=st.dictionaries(SAFE, SAFE_VALUES, min_size=1, max_size=4),
       time=st.integers(min_value=0, max_value=2 ** 50))
def test_same_bytes_as_influxdb_client(measurement, tags, fields, time):
    """Where influxdb-client's own serializer is right (no backslashes, no line breaks: it does
    not escape those), clusterkit writes exactly what it writes."""
    from influxdb_client import Point, WritePrecision

    p = Point(measurement)
    for k, v in tags.items():
        p.tag(k, v)
    for k, v in fields.items():
        p.field(k, v)
    p.time(time, WritePrecision.MS)
    assert encode_line(measurement, tags, fields, time) == p.to_line_protocol()
