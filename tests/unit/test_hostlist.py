"""Hostlist expand/fold: expected values were produced by Slurm 22.05's scontrol.

``scontrol show hostnames EXPR`` for EXPAND_CASES, ``scontrol show hostlistsorted`` and
``scontrol show hostlist`` for FOLD_CASES (tests/integration/test_hostlist_vs_scontrol.py
re-checks them against the real binary where it is installed).
"""

from __future__ import annotations

from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clusterkit import hostlist
from clusterkit.cli import main
from clusterkit.errors import HostlistError, UsageError

EXPAND_CASES = [
    ("gpu-[001-003]", ["gpu-001", "gpu-002", "gpu-003"]),
    ("rack[1-2]-gpu[01-02]", ["rack1-gpu01", "rack1-gpu02", "rack2-gpu01", "rack2-gpu02"]),
    (
        "gpu-[001-003,007],login1,cpu[1-2]",
        ["gpu-001", "gpu-002", "gpu-003", "gpu-007", "login1", "cpu1", "cpu2"],
    ),
    ("n[8-10]", ["n8", "n9", "n10"]),
    ("n[08-10]", ["n08", "n09", "n10"]),
    ("n[01-3]", ["n01", "n02", "n03"]),  # the width comes from the lower bound
    ("n[1-003]", ["n1", "n2", "n3"]),
    ("n[0001-1]", ["n0001"]),
    ("n[1-3],n2", ["n1", "n2", "n3", "n2"]),  # no dedupe, no sort
    ("n3,n1,n2", ["n3", "n1", "n2"]),
    ("n1,n1", ["n1", "n1"]),
    ("n[3,3]", ["n3", "n3"]),
    ("n[5,1-3]", ["n5", "n1", "n2", "n3"]),
    ("n[1-2][3-4]", ["n13", "n14", "n23", "n24"]),
    ("n[1-2]-[3-4]", ["n1-3", "n1-4", "n2-3", "n2-4"]),
    # Slurm's product order: last group fastest, then the first, then the second
    ("a[1-2]b[1-2]c[1-2]", ["a1b1c1", "a1b1c2", "a2b1c1", "a2b1c2", "a1b2c1", "a1b2c2", "a2b2c1", "a2b2c2"]),
    ("[1-3]", ["1", "2", "3"]),
    ("login", ["login"]),
    ("n1.example.com", ["n1.example.com"]),
    ("n[1-2],", ["n1", "n2"]),
    (",n1", ["n1"]),
    ("n1,,n2", ["n1", "n2"]),
    ("n1 n2\tn3", ["n1", "n2", "n3"]),  # Slurm also splits on spaces and tabs
    ("n[9-11]", ["n9", "n10", "n11"]),
    ("n[009-011]", ["n009", "n010", "n011"]),
    ("n[0-0]", ["n0"]),
    ("n[1]", ["n1"]),
    ("n_[1-2]", ["n_1", "n_2"]),
    ("n[1-2]_[1-2]", ["n1_1", "n1_2", "n2_1", "n2_2"]),
    ('a"b', ['a"b']),
    ("a;b", ["a;b"]),
    ("$(x)", ["$(x)"]),
    ("`id`,a'b", ["`id`", "a'b"]),
    ("gpu-001,gpu-002,gpu-010", ["gpu-001", "gpu-002", "gpu-010"]),
    ("n[2147483646-2147483647]", ["n2147483646", "n2147483647"]),
]

# (names joined by commas, scontrol show hostlistsorted, scontrol show hostlist)
FOLD_CASES = [
    ("n3,n1,n2", "n[1-3]", "n[3,1-2]"),
    ("n1,n1", "n[1,1]", "n[1,1]"),
    ("n1,n2,n1", "n[1,1-2]", "n[1-2,1]"),
    ("gpu-001,gpu-002,gpu-010", "gpu-[001-002,010]", "gpu-[001-002,010]"),
    ("gpu-010,gpu-001,gpu-002", "gpu-[001-002,010]", "gpu-[010,001-002]"),
    ("n1,n01,n001", "n[1,01,001]", "n[1,01,001]"),
    ("n8,n9,n10", "n[8-10]", "n[8-10]"),
    ("n08,n09,n10", "n[08-10]", "n[08-10]"),
    ("n9,n10,n11,n012", "n[9-11,012]", "n[9-11,012]"),
    ("a,b,a", "a,a,b", "a,b,a"),
    ("login,n1,n2", "login,n[1-2]", "login,n[1-2]"),
    ("n2,login,n1", "login,n[1-2]", "n2,login,n1"),
    ("rack1-gpu01,rack1-gpu02,rack2-gpu01", "rack1-gpu[01-02],rack2-gpu01", "rack1-gpu[01-02],rack2-gpu01"),
    (
        "rack2-gpu01,rack1-gpu02,rack1-gpu01,rack10-gpu1",
        "rack1-gpu[01-02],rack2-gpu01,rack10-gpu1",
        "rack2-gpu01,rack1-gpu[02,01],rack10-gpu1",
    ),
    ("n1,m1,n2", "m1,n[1-2]", "n1,m1,n2"),
    ("n1x,n2x", "n1x,n2x", "n1x,n2x"),
    ("1,2,3", "[1-3]", "[1-3]"),
    ("001,002", "[001-002]", "[001-002]"),
    ("n-1,n-2,n_1", "n-[1-2],n_1", "n-[1-2],n_1"),
    ("a1,b1,a2,b2", "a[1-2],b[1-2]", "a1,b1,a2,b2"),
    ("n,n1,n2", "n,n[1-2]", "n,n[1-2]"),
    ("n1,n,n2", "n,n[1-2]", "n1,n,n2"),
    ("gpu-10,gpu-9,gpu-010,gpu-09", "gpu-[9,09-10,010]", "gpu-[10,9,010,09]"),
    ("N1,n1,M2", "M2,N1,n1", "N1,n1,M2"),
    (
        "rack01-gpu1,rack1-gpu1,rack001-gpu1",
        "rack001-gpu1,rack01-gpu1,rack1-gpu1",
        "rack01-gpu1,rack1-gpu1,rack001-gpu1",
    ),
    ("a01x,a1x", "a01x,a1x", "a01x,a1x"),
    ("é1,e1,f1,z1", "é1,e1,f1,z1", "é1,e1,f1,z1"),  # Slurm compares signed chars
    ("n1,n2,n3,n2,n3,n4", "n[1-2,2-3,3-4]", "n[1-3,2-4]"),
    ("n5,n1,n2,n3,n4,n6,n7,n3", "n[1-3,3-7]", "n[5,1-4,6-7,3]"),
    ('a"1,a"2', 'a"[1-2]', 'a"[1-2]'),
]

# (expression, words the one-line message must contain)
ERROR_CASES = [
    ("", "empty hostlist expression"),
    (" ", "no hostnames"),
    (",,", "no hostnames"),
    ("gpu-[001-003", "never closed"),
    ("gpu-001]", "']' without '['"),
    ("n[[1-2]]", "nested '['"),
    ("n[1-2]]", "']' without '['"),
    ("gpu-[3-1]", "runs backwards"),
    ("gpu-[a-b]", "'a-b' in 'gpu-[a-b]' is not NUMBER or NUMBER-NUMBER"),
    ("gpu-[]", "empty brackets"),
    ("gpu-[1,,2]", "empty range"),
    ("gpu-[1-2,]", "empty range"),
    ("gpu-[1-]", "'1-'"),
    ("gpu-[-1]", "'-1'"),
    ("gpu-[ 1-2]", "' 1-2'"),
    ("gpu-[+1-2]", "'+1-2'"),
    ("gpu-[1-2-3]", "'1-2-3'"),
    ("gpu-[1x2]", "'1x2'"),
    ("n[1-3]x", "'x' follows the last ']'"),
    ("n[1-2].example.com", "'.example.com' follows the last ']'"),
    ("gpu-[1-65537]", "65536 per range"),
    ("n[1-40000,1-40000][1]", "more than 65536 values"),
    ("n[1-1000][1-1001]", "more than 1,000,000 names"),
    ("a[1-60000],b[1-60000],c[1-60000],d[1-60000],e[1-60000],f[1-60000],g[1-60000],"
     "h[1-60000],i[1-60000],j[1-60000],k[1-60000],l[1-60000],m[1-60000],n[1-60000],"
     "o[1-60000],p[1-60000],q[1-60000]", "more than 1,000,000 names"),
    ("a\nb", "control character '\\n'"),
    ("a\x00b", "control character"),
    ("x3000000000", "above 2147483647"),
    ("n[2147483648]", "above 2147483647"),
    ("n9999999999[1-2]", "end in a number above 2147483647"),
    ("a" * 256, "longer than 255"),
    ("a" * 250 + "[1-100000]", "65536 per range"),
    ("a" * 251 + "[1-10000]", "longer than 255"),
]


@pytest.mark.parametrize(("expr", "names"), EXPAND_CASES)
def test_expand_matches_scontrol_show_hostnames(expr: str, names: list[str]) -> None:
    assert hostlist.expand(expr) == names


@pytest.mark.parametrize(("joined", "sorted_fold", "unsorted_fold"), FOLD_CASES)
def test_fold_matches_scontrol_show_hostlist(joined: str, sorted_fold: str, unsorted_fold: str) -> None:
    names = joined.split(",")
    assert hostlist.fold(names) == sorted_fold
    assert hostlist.fold(names, sort=False) == unsorted_fold
    # both folds expand back to the same names, the unsorted one in the given order
    assert hostlist.expand(unsorted_fold) == names
    assert sorted(hostlist.expand(sorted_fold)) == sorted(names)


@pytest.mark.parametrize(("expr", "words"), ERROR_CASES)
def test_malformed_expressions_raise_one_clear_line(expr: str, words: str) -> None:
    with pytest.raises(HostlistError) as info:
        hostlist.expand(expr)
    message = str(info.value)
    assert words in message
    assert "\n" not in message
    assert isinstance(info.value, UsageError) and info.value.exit_code == 2


def test_big_ranges_keep_padding_and_count() -> None:
    names = hostlist.expand("gpu-[001-1000]")
    assert len(names) == 1000
    assert names[:3] == ["gpu-001", "gpu-002", "gpu-003"]
    assert names[98:101] == ["gpu-099", "gpu-100", "gpu-101"]
    assert names[-1] == "gpu-1000"
    assert hostlist.fold(reversed(names)) == "gpu-[001-1000]"
    # Slurm's per-range limit is inclusive; the 1,000,000-name limit too
    assert len(hostlist.expand("n[1-65536]")) == 65536
    assert hostlist.expand("n[1-65536]")[-1] == "n65536"
    assert len(hostlist.expand("a" * 250 + "[1-10000]")[-1]) == 255  # the longest allowed


def test_expand_one_million_names_is_allowed() -> None:
    names = hostlist.expand("n[1-1000]-[1-1000]")
    assert len(names) == 1_000_000
    assert names[0] == "n1-1" and names[999] == "n1-1000" and names[1000] == "n2-1"


def test_unique_drops_later_duplicates() -> None:
    assert hostlist.expand("n[1-3],n2,n1", unique=True) == ["n1", "n2", "n3"]
    assert hostlist.fold(["n2", "n1", "n2", "n1"], unique=True) == "n[1-2]"
    assert hostlist.fold(["n2", "n1", "n2", "n1"]) == "n[1,1-2,2]"
    assert hostlist.fold(["n2", "n1", "n2", "n1"], sort=False, unique=True) == "n[2,1]"


def test_fold_of_nothing_is_empty() -> None:
    assert hostlist.fold([]) == ""


@pytest.mark.parametrize(
    ("names", "words"),
    [
        (["gpu-[001-002]"], "contains '['"),
        (["a,b"], "contains ','"),
        (["a b"], "contains ' '"),
        ([""], "empty hostname"),
        (["ok", "x3000000000"], "above 2147483647"),
        (["a\tb"], "contains '\\t'"),
    ],
)
def test_fold_refuses_what_is_not_a_hostname(names: list[str], words: str) -> None:
    with pytest.raises(HostlistError) as info:
        hostlist.fold(names)
    assert words in str(info.value)


def test_fold_refuses_a_bare_string() -> None:
    with pytest.raises(HostlistError, match="list of hostnames"):
        hostlist.fold("gpu-001")


def test_fold_gives_up_on_slurms_quadratic_duplicate_case(monkeypatch: pytest.MonkeyPatch) -> None:
    # Copies of one range: Slurm's coalescing step is quadratic there (100 copies of
    # n[1-100] fit the real budget and match scontrol; this test shrinks the budget).
    monkeypatch.setattr(hostlist, "_COALESCE_BUDGET", 20_000)
    names = hostlist.expand("n[1-100]") * 30
    with pytest.raises(HostlistError, match="remove the duplicates first"):
        hostlist.fold(names)
    assert hostlist.fold(names, unique=True) == "n[1-100]"
    assert hostlist.fold(names, sort=False) == "n[" + ",".join(["1-100"] * 30) + "]"
    assert hostlist.fold(hostlist.expand("n[1-3]") * 3) == "n[1,1,1-2,2,2-3,3,3]"


def test_exact_merge_sort_path_agrees_with_scontrol() -> None:
    # More than 64 distinct prefixes with digits: the comparator-driven merge sort runs.
    names = [f"p{i}q{j}" for i in range(70, 0, -1) for j in (3, 1, 2)] + ["p07q1", "p7q01"]
    folded = hostlist.fold(names)
    assert folded.startswith("p07q1,p1q[1-3],p2q[1-3],p3q[1-3],")
    assert ",p6q[1-3],p7q[1-3,01],p8q[1-3]," in folded  # p7q01: same prefix, wider
    assert folded.endswith("p69q[1-3],p70q[1-3]")


def test_natural_key_orders_numbers_numerically() -> None:
    assert sorted(["gpu-10", "gpu-2", "gpu-1"], key=hostlist.natural_key) == ["gpu-1", "gpu-2", "gpu-10"]


# --------------------------------------------------------------------------- CLI
def _run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as info:
        main(["hosts", *args])
    out, err = capsys.readouterr()
    return info.value.code, out, err


def test_cli_expands_one_name_per_line(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = _run_cli(capsys, "gpu-[001-004]", "login1")
    assert (rc, err) == (0, "")
    assert out == "gpu-001\ngpu-002\ngpu-003\ngpu-004\nlogin1\n"


def test_cli_folds(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = _run_cli(capsys, "--fold", "gpu-010", "gpu-[001-002]", "login1")
    assert (rc, out, err) == (0, "gpu-[001-002,010],login1\n", "")


@pytest.mark.parametrize("expr", ["gpu-[3-1]", "gpu-[001-003", "", "n[1-3]x"])
def test_cli_bad_expression_is_one_line_and_exit_2(capsys: pytest.CaptureFixture[str], expr: str) -> None:
    rc, out, err = _run_cli(capsys, expr)
    assert rc == 2
    assert out == ""
    assert err.startswith("clusterkit: error: ")
    assert err.count("\n") == 1


# --------------------------------------------------------------------------- properties
_PREFIXES = st.sampled_from(["gpu-", "n", "node", "a", "b-", "login", "x.y", ""])
_NUMBERS = st.builds(
    lambda v, w: f"{v:0{w}d}", st.integers(0, 1200), st.sampled_from([0, 0, 1, 2, 3, 4])
)
_NAMES = st.builds(lambda p, n, bare: p if bare and p else p + n, _PREFIXES, _NUMBERS, st.booleans())
_SETTINGS = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _slurm_order(name: str) -> tuple:
    """Slurm's order for names whose prefixes have no digits: prefix, bare names first,
    then printed width, then number (the width/number rule is hostrange_cmp's)."""
    prefix, digits = hostlist._split_number(name)
    if not digits:
        return (name, 0, 0, 0)
    return (prefix, 1, len(digits), int(digits))


@_SETTINGS
@given(st.lists(_NAMES, min_size=1, max_size=40))
def test_fold_then_expand_gives_the_names_back(names: list[str]) -> None:
    assert hostlist.expand(hostlist.fold(names, sort=False)) == names
    assert hostlist.expand(hostlist.fold(names)) == sorted(names, key=_slurm_order)
    unique = hostlist.expand(hostlist.fold(names, unique=True))
    assert unique == sorted(set(names), key=_slurm_order)


_DIGIT_PREFIXES = st.sampled_from(["rack1-n", "rack01-n", "rack001-n", "rack10-n", "a1b", "a01b", "x0-", "n", ""])


@_SETTINGS
@given(st.lists(st.builds(lambda p, n: p + n, _DIGIT_PREFIXES, _NUMBERS), min_size=1, max_size=40))
def test_fast_sort_agrees_with_replayed_merge_sort(names: list[str]) -> None:
    fast = hostlist.fold(names)
    with mock.patch.object(hostlist._Comparator, "sort_key", lambda self, ranges: None):
        assert hostlist.fold(names) == fast


@_SETTINGS
@given(st.lists(_NAMES, min_size=1, max_size=40))
def test_fold_is_stable(names: list[str]) -> None:
    folded = hostlist.fold(names)
    assert hostlist.fold(hostlist.expand(folded)) == folded
    plain = hostlist.fold(names, sort=False)
    assert hostlist.fold(hostlist.expand(plain), sort=False) == plain


@_SETTINGS
@given(
    st.sampled_from(["gpu-", "rack1-n", "n"]),
    st.integers(0, 300),
    st.integers(0, 40),
    st.integers(1, 5),
)
def test_ranges_keep_the_lower_bounds_padding(prefix: str, lo: int, span: int, width: int) -> None:
    lo_s = f"{lo:0{width}d}"
    names = hostlist.expand(f"{prefix}[{lo_s}-{lo + span}]")
    assert len(names) == span + 1
    assert names == [f"{prefix}{v:0{len(lo_s)}d}" for v in range(lo, lo + span + 1)]
    assert hostlist.expand(hostlist.fold(names)) == names


@_SETTINGS
@given(st.text(alphabet="gn-01,[]x 9", max_size=30) | st.text(max_size=30))
def test_any_text_either_expands_or_raises_hostlist_error(text: str) -> None:
    try:
        names = hostlist.expand(text)
    except HostlistError as e:
        assert "\n" not in str(e)
    else:
        assert names and all(isinstance(n, str) and n for n in names)
        assert hostlist.expand(hostlist.fold(names, sort=False)) == names
