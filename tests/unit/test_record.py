"""clusterkit.record against pydantic itself: the same declarations, the same inputs, the same
values and the same errors (location, message), read from pydantic in the same run."""

from __future__ import annotations

import copy
import enum
import json
import pickle
import subprocess
import sys
from typing import Annotated, Any, Literal, Optional, Union

import pydantic
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clusterkit import record
from clusterkit.config import Bool, Int, Num


class Color(str, enum.Enum):
    RED = "red"
    BLUE = "blue"


def declare(lib: Any) -> dict[str, Any]:
    """The same models, declared with pydantic or with clusterkit.record (``lib``)."""
    BaseModel = lib.BaseModel if lib is pydantic else lib.Record  # noqa: N806
    Field, ConfigDict = lib.Field, lib.ConfigDict  # noqa: N806
    field_validator, model_validator = lib.field_validator, lib.model_validator
    invalid = (lambda m: __import__("pydantic_core").PydanticCustomError("invalid", "{message}", {"message": m})) \
        if lib is pydantic else record.Invalid

    class Inner(BaseModel):
        model_config = ConfigDict(extra="forbid")
        n: Int = Field(default=0, ge=0, le=64)
        x: Optional[Num] = Field(default=None, gt=0)
        flag: Bool = True

    class Outer(BaseModel):
        model_config = ConfigDict(extra="forbid")
        name: str = Field(min_length=1, max_length=8, pattern=r"^[a-z]")
        count: int = 0
        ratio: float = 1.0
        on: bool = False
        color: Optional[Color] = None
        layer: Literal["InfiniBand", "Ethernet"] = "InfiniBand"
        tags: list[str] = Field(default_factory=list, max_length=3)
        sizes: tuple[int, ...] = ()
        limits: dict[str, Int] = Field(default_factory=dict, max_length=2)
        inner: Inner = Field(default_factory=Inner)
        inners: list[Inner] = Field(default_factory=list)
        nodes: Union[str, Annotated[list[str], Field(min_length=1, max_length=2)]] = "n1"
        anything: Any = None
        maybe: Optional[Union[str, list[str]]] = None
        by_gpu: dict[int, Color] = Field(default_factory=dict)
        pair: tuple[int, str] = (0, "")

        @field_validator("tags")
        @classmethod
        def _no_x(cls, v: list[str], info: Any) -> list[str]:
            if "x" in v:
                raise invalid(f"tags: no x (name {info.data.get('name')})")
            return v

        @field_validator("count", mode="before")
        @classmethod
        def _words(cls, v: Any) -> Any:
            return 3 if v == "three" else v

        @model_validator(mode="after")
        def _check(self) -> Any:
            if self.count > 100:
                raise invalid(f"count {self.count} is above 100")
            if self.count == 99:
                raise ValueError("not 99")
            return self

    class Tolerant(BaseModel):
        model_config = ConfigDict(extra="ignore", populate_by_name=True)
        schema_: str = Field(default="s/v1", alias="schema")
        value: Union[bool, int, float, str, None] = None

    return {"Inner": Inner, "Outer": Outer, "Tolerant": Tolerant}


class Pickled(record.Record):
    a: list[int] = []
    b: str = ""


P = declare(pydantic)
R = declare(record)

INPUTS: list[tuple[str, dict[str, Any]]] = [
    ("Outer", {"name": "a"}),
    ("Outer", {}),
    ("Outer", {"name": ""}),
    ("Outer", {"name": "abcdefghij"}),
    ("Outer", {"name": "Abc"}),
    ("Outer", {"name": 5}),
    ("Outer", {"name": "a", "count": "7"}),
    ("Outer", {"name": "a", "count": " 7 "}),
    ("Outer", {"name": "a", "count": 3.0}),
    ("Outer", {"name": "a", "count": 3.5}),
    ("Outer", {"name": "a", "count": "x"}),
    ("Outer", {"name": "a", "count": True}),
    ("Outer", {"name": "a", "count": None}),
    ("Outer", {"name": "a", "count": "three"}),
    ("Outer", {"name": "a", "count": 101}),
    ("Outer", {"name": "a", "count": 99}),
    ("Outer", {"name": "a", "ratio": 2}),
    ("Outer", {"name": "a", "ratio": "2.5"}),
    ("Outer", {"name": "a", "ratio": "fast"}),
    ("Outer", {"name": "a", "on": 1}),
    ("Outer", {"name": "a", "on": 2}),
    ("Outer", {"name": "a", "on": "yes"}),
    ("Outer", {"name": "a", "on": "maybe"}),
    ("Outer", {"name": "a", "on": []}),
    ("Outer", {"name": "a", "color": "red"}),
    ("Outer", {"name": "a", "color": "green"}),
    ("Outer", {"name": "a", "layer": "Ethernet"}),
    ("Outer", {"name": "a", "layer": "RoCE"}),
    ("Outer", {"name": "a", "tags": ("p", "q")}),
    ("Outer", {"name": "a", "tags": "pq"}),
    ("Outer", {"name": "a", "tags": ["p", 1, "q"]}),
    ("Outer", {"name": "a", "tags": ["a", "b", "c", "d"]}),
    ("Outer", {"name": "a", "tags": ["x"]}),
    ("Outer", {"name": "a", "sizes": [1, 2]}),
    ("Outer", {"name": "a", "limits": {"a": 1}}),
    ("Outer", {"name": "a", "limits": {"a": True}}),
    ("Outer", {"name": "a", "limits": {"a": 1, "b": 2, "c": 3}}),
    ("Outer", {"name": "a", "limits": [1]}),
    ("Outer", {"name": "a", "inner": {"n": 3, "x": 2}}),
    ("Outer", {"name": "a", "inner": {"n": -1}}),
    ("Outer", {"name": "a", "inner": {"n": 65}}),
    ("Outer", {"name": "a", "inner": {"n": "3"}}),
    ("Outer", {"name": "a", "inner": {"x": 0}}),
    ("Outer", {"name": "a", "inner": {"x": float("inf")}}),
    ("Outer", {"name": "a", "inner": {"x": True}}),
    ("Outer", {"name": "a", "inner": {"flag": 1}}),
    ("Outer", {"name": "a", "inner": {"zz": 1}}),
    ("Outer", {"name": "a", "inner": 5}),
    ("Outer", {"name": "a", "inners": [{"n": 1}, {"n": "q"}, 7]}),
    ("Outer", {"name": "a", "nodes": ["a", "b"]}),
    ("Outer", {"name": "a", "nodes": []}),
    ("Outer", {"name": "a", "nodes": 5}),
    ("Outer", {"name": "a", "maybe": ["p"]}),
    ("Outer", {"name": "a", "anything": {"k": [1]}}),
    ("Outer", {"name": "a", "extra": 1, "more": 2}),
    ("Outer", {"name": "a", "by_gpu": {1: "red", "2": "blue"}}),
    ("Outer", {"name": "a", "by_gpu": {"x": "red"}}),
    ("Outer", {"name": "a", "pair": [3, "b"]}),
    ("Outer", {"name": "a", "pair": [3]}),
    ("Outer", {"name": "a", "pair": []}),
    ("Outer", {"name": "a", "pair": ["q"]}),
    ("Outer", {"name": "a", "pair": [1, "a", "b"]}),
    ("Outer", {"name": "a", "pair": ["q", 5]}),
    ("Outer", {"name": "", "count": "x", "extra": 1}),
    ("Tolerant", {"schema": "s/v2", "other": 1}),
    ("Tolerant", {"schema_": "s/v3"}),
    ("Tolerant", {"value": 3}),
    ("Tolerant", {"value": "3"}),
    ("Tolerant", {"value": 2.5}),
    ("Tolerant", {"value": True}),
    ("Tolerant", {"value": [1]}),
]


def outcome(models: dict[str, Any], name: str, data: dict[str, Any]) -> Any:
    lib_error = pydantic.ValidationError if models is P else record.ValidationError
    try:
        m = models[name].model_validate(copy.deepcopy(data))
    except lib_error as e:
        return ("error", [(tuple(err["loc"]), err["msg"]) for err in e.errors()])
    return ("ok", m.model_dump(), m.model_dump(mode="json"), m.model_dump(mode="json", by_alias=True),
            sorted(m.model_fields_set), json.loads(m.model_dump_json()), m.model_dump(exclude_defaults=True),
            m.model_dump(exclude_none=True), json.loads(m.model_dump_json(exclude_unset=True)))


@pytest.mark.parametrize(("name", "data"), INPUTS, ids=[f"{n}-{i}" for i, (n, _) in enumerate(INPUTS)])
def test_same_values_and_errors_as_pydantic(name: str, data: dict[str, Any]) -> None:
    assert outcome(R, name, data) == outcome(P, name, data)


def test_values_read_back() -> None:
    m = R["Outer"](name="a", count="7", color="blue", inner={"n": 2}, sizes=[1, 2])
    assert (m.count, m.color, m.inner.n, m.sizes) == (7, Color.BLUE, 2, (1, 2))
    assert m.model_dump(mode="json")["color"] == "blue" and m.model_dump()["color"] is Color.BLUE
    assert m.model_fields_set == {"name", "count", "color", "inner", "sizes"}
    assert m.model_dump(mode="json", exclude_unset=True) == {"name": "a", "count": 7, "color": "blue",
                                                             "inner": {"n": 2}, "sizes": [1, 2]}
    assert R["Outer"].model_fields["tags"].default_factory is list
    assert R["Outer"].model_fields["name"].is_required()


def test_defaults_are_not_shared() -> None:
    class WithList(record.Record):
        items: list[int] = []

    a, b = WithList(), WithList()
    a.items.append(1)
    assert b.items == []


def test_copy_equality_pickle_and_frozen() -> None:
    m = R["Outer"](name="a", tags=["p"])
    c = m.model_copy(update={"count": 5})
    assert (c.count, m.count, c.tags) == (5, 0, ["p"]) and c != m and "count" in c.model_fields_set
    d = m.model_copy(deep=True)
    d.tags.append("q")
    assert m.tags == ["p"] and copy.deepcopy(m) == m
    p = Pickled(a=[1], b="x")
    assert pickle.loads(pickle.dumps(p)) == p and pickle.loads(pickle.dumps(p)).model_fields_set == {"a", "b"}
    assert dict(m)["name"] == "a" and set(vars(m)) == set(R["Outer"].model_fields)  # nothing but the fields
    assert repr(m).startswith("Outer(name='a', count=0")

    class Frozen(record.Record):
        model_config = record.ConfigDict(frozen=True)
        a: int = 1

    f = Frozen(a=2)
    with pytest.raises(TypeError, match="frozen"):
        f.a = 3  # type: ignore[misc]
    assert hash(f) == hash(Frozen(a=2)) and {f, Frozen(a=2)} == {f}
    with pytest.raises(TypeError):
        hash(m)


def test_error_text_names_every_problem() -> None:
    with pytest.raises(record.ValidationError) as e:
        R["Outer"].model_validate({"name": "", "count": "x"})
    text = str(e.value)
    assert text.startswith("2 validation errors for Outer\nname\n  String should have at least 1 character")
    assert e.value.error_count() == 2
    with pytest.raises(record.ValidationError, match="Invalid JSON"):
        R["Outer"].model_validate_json("{nope")
    with pytest.raises(record.ValidationError, match="valid dictionary or instance of Outer"):
        R["Outer"].model_validate([1])


def test_a_record_inside_a_pydantic_model() -> None:
    Inner = R["Inner"]  # noqa: N806

    class Doc(pydantic.BaseModel):
        inner: Inner  # type: ignore[valid-type]
        inners: list[Inner] = []  # type: ignore[valid-type]

    d = Doc.model_validate({"inner": {"n": 2}, "inners": [{"x": 1.5}]})
    assert isinstance(d.inner, Inner) and d.inner.n == 2 and d.inners[0].x == 1.5
    assert json.loads(d.model_dump_json()) == {"inner": {"n": 2, "x": None, "flag": True},
                                               "inners": [{"n": 0, "x": 1.5, "flag": True}]}
    assert d.model_dump()["inner"] == {"n": 2, "x": None, "flag": True}
    assert Doc.model_validate_json(d.model_dump_json()) == d
    with pytest.raises(pydantic.ValidationError) as e:
        Doc.model_validate({"inner": {"n": "q", "zz": 1}})
    err = e.value.errors()[0]
    assert err["loc"] == ("inner",)
    assert err["msg"] == "n: Input should be a valid integer (and 1 more)"  # the extra key comes second


def test_a_subclass_config_is_merged_over_its_bases() -> None:
    class Base(record.Record):
        model_config = record.ConfigDict(extra="forbid")
        a: int = 0

    class Child(Base):
        model_config = record.ConfigDict(frozen=True)
        b: int = 0

    with pytest.raises(record.ValidationError, match="Extra inputs are not permitted"):
        Child(c=1)
    with pytest.raises(TypeError, match="frozen"):
        Child().b = 2  # type: ignore[misc]
    assert Child.model_config == {"extra": "forbid", "frozen": True} and Base.model_config == {"extra": "forbid"}


def test_a_validator_naming_no_field_is_refused() -> None:
    class Bad(record.Record):
        a: int = 0

        @record.field_validator("b")
        @classmethod
        def _v(cls, v: Any) -> Any:
            return v

    with pytest.raises(TypeError, match="names no field 'b'"):
        Bad()


def test_importing_records_loads_no_pydantic() -> None:
    code = ("import sys, clusterkit.record, clusterkit.models, clusterkit.profiles, clusterkit.sim, "
            "clusterkit.config; print(sorted(m for m in sys.modules if m.startswith('pydantic')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(["name", "count", "ratio", "on", "color", "tags", "limits", "inner",
                                        "nodes", "sizes", "extra"]),
                       st.recursive(st.none() | st.booleans() | st.integers(-5, 200) | st.floats(-1e9, 1e9)
                                    | st.text(max_size=4),
                                    lambda kids: st.lists(kids, max_size=3)
                                    | st.dictionaries(st.sampled_from(["n", "x", "flag", "a"]), kids, max_size=3),
                                    max_leaves=6),
                       max_size=5))
def test_fuzz_same_as_pydantic(data: dict[str, Any]) -> None:
    assert outcome(R, "Outer", data) == outcome(P, "Outer", data)


def test_generated_code_reads_as_the_loop_does(monkeypatch: pytest.MonkeyPatch) -> None:
    """After HOT_AFTER validations a class's fields are read by generated code: same values,
    same errors."""
    monkeypatch.setattr(record, "HOT_AFTER", 10**9)
    decl = declare(record)
    outer = decl["Outer"]
    loop = [outcome(decl, name, data) for name, data in INPUTS if name == "Outer"]
    comp = outer._build()
    assert comp.fill.__code__.co_filename != "<string>"  # still the loop
    comp.fill = record._fill_function("Outer", comp.plan)
    assert [outcome(decl, name, data) for name, data in INPUTS if name == "Outer"] == loop
    monkeypatch.setattr(record, "HOT_AFTER", 5)
    inner = declare(record)["Inner"]
    for n in range(5):
        assert inner._build().fill.__code__.co_filename != "<string>"
        inner.model_validate({"n": n})
    assert inner._build().fill.__code__.co_filename == "<string>"  # handed over on the 5th call
