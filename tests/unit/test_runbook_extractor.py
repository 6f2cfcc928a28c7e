"""The runbook extractor (tests/infra/runbook.py): markdown -> steps with expectations, needs and
files; and the repository's runbooks keep the convention (parse, lint, index)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from tests.infra.runbook import (
    Clause,
    Expectation,
    RunbookError,
    earlier_failure,
    last_command_start,
    lint,
    parse,
    parse_expect,
    script,
    split_clauses,
)

ROOT = Path(__file__).resolve().parents[2]
RUNBOOK_DIR = ROOT / "docs" / "runbooks"
RUNBOOKS = sorted(p for p in RUNBOOK_DIR.glob("*.md") if p.name != "README.md")

BOOK = '''# Runbook: demo

Intro text.

<!-- file: fleet.yaml -->
```yaml
name: demo
nodes: "gpu-[001-004]"
```

## Step 1 — look

<!-- needs: slurm, metrics-store -->
<!-- expect: exit=1|3; stdout~="gpu-003"; stderr!~="Traceback" -->
```sh
clusterkit validate --sim fleet.yaml --partition gpu
```

It exits 1 (or exit 3 when a node is unreachable): go to step 2.

```text
FAIL   gpu.ecc.uncorrectable  gpu-003
```

## Step 2

<!-- an ordinary comment -->
<!-- Note: not a directive either -->
<!-- expect: exit=0;
     json.summary.failed=0 -->
```sh
cd sub
clusterkit validate --sim ../fleet.yaml --json
```

Exits 0.
'''


# ----------------------------------------------------------------------------- parse
def test_steps_in_document_order_with_files_needs_and_expectations() -> None:
    book = parse(BOOK)
    assert book.title == "Runbook: demo"
    assert [s.kind for s in book.steps] == ["file", "run", "run"]
    f, one, two = book.steps
    assert f.path == "fleet.yaml" and f.code == 'name: demo\nnodes: "gpu-[001-004]"\n' and f.lang == "yaml"
    assert one.needs == ("slurm", "metrics-store") and one.heading == "Step 1 — look"
    assert one.code == "clusterkit validate --sim fleet.yaml --partition gpu\n"
    assert one.expect is not None and one.expect.exits == (1, 3)
    assert one.expect.clauses == (
        Clause("stdout", "~", text="gpu-003", source='stdout~="gpu-003"'),
        Clause("stderr", "!~", text="Traceback", source='stderr!~="Traceback"'))
    assert "It exits 1 (or exit 3" in one.prose_after and "FAIL" not in one.prose_after
    assert two.needs == () and two.expect is not None and two.expect.exits == (0,)
    assert two.expect.clauses[0].target == "json" and two.expect.clauses[0].path == ("summary", "failed")
    assert book.needs == {"slurm", "metrics-store"}
    assert [s.line for s in book.commands] == [15, 31]
    assert lint(book) == []


def test_plain_and_text_blocks_are_not_steps() -> None:
    book = parse("# t\n\n```yaml\na: 1\n```\n\n```\nplain\n```\n\n~~~text\nx\n~~~\n")
    assert book.steps == ()
    assert lint(book) == ["no ```sh command block"]


def test_longer_fences_and_tildes() -> None:
    book = parse('# t\n<!-- expect: exit=0 -->\n~~~~sh\necho "```"\n~~~~\nexits 0\n')
    assert book.commands[0].code == 'echo "```"\n'


@pytest.mark.parametrize("text, message", [
    ("```sh\nls\n```\n", "without an <!-- expect"),
    ("<!-- expect: exit=0 -->\n```bash\nls\n```\n", "```bash block"),
    ("<!-- expect: exit=0 -->\n```console\n$ ls\n```\n", "```console block"),
    ("<!-- expect: exit=0 -->\n\nsome prose\n```sh\nls\n```\n", "directive not followed by a code block"),
    ("<!-- expect: exit=0 -->\n## heading\n```sh\nls\n```\n", "directive not followed by a code block"),
    ("<!-- expect: exit=0 -->\n", "directive at the end"),
    ("<!-- expext: exit=0 -->\n```sh\nls\n```\n", "unknown directive 'expext'"),
    ("<!-- file: a.yaml -->\n```sh\nls\n```\n", "a file directive belongs before a data block"),
    ("<!-- expect: exit=0 -->\n```yaml\na: 1\n```\n", "only ```sh blocks are run"),
    ("<!-- file: ../x.yaml -->\n```yaml\na: 1\n```\n", "file name '../x.yaml'"),
    ("<!-- file: /etc/x -->\n```yaml\na: 1\n```\n", "file name '/etc/x'"),
    ("<!-- needs: gpus -->\n<!-- expect: exit=0 -->\n```sh\nls\n```\n", "unknown capability 'gpus'"),
    ("<!-- expect: exit=0 -->\n<!-- expect: exit=1 -->\n```sh\nls\n```\n", "two 'expect' directives"),
    ("<!-- expect: exit=0 -->\n```sh\ncat > f <<EOF\nx\nEOF\n```\n", "heredoc"),
    ("<!-- expect: exit=0 -->\n```sh\n```\n", "empty ```sh block"),
    ("<!-- expect: exit=0 -->\n```sh\nls\n", "never closed"),
    ("<!-- expect: exit=0\n```sh\nls\n```\n", "never closed"),
    ("<!-- expect: stdout~=\"x\" -->\n```sh\nls\n```\n", "no exit=N clause"),
])
def test_convention_errors_name_the_line(text: str, message: str) -> None:
    with pytest.raises(RunbookError, match=re.escape(message)) as e:
        parse(text)
    assert str(e.value).startswith("line ")


def test_here_string_is_no_heredoc() -> None:
    book = parse('<!-- expect: exit=0 -->\n```sh\ngrep -q x <<< "x"\n```\n')
    assert book.commands[0].code == 'grep -q x <<< "x"\n'


# ----------------------------------------------------------------------------- expectations
def test_clause_grammar() -> None:
    e = parse_expect('exit=0|1; stdout~="a; b"; stdout!~=/gpu-00[1-3]\\b/; stderr~="say \\"hi\\"\\n"; '
                     'file(out/r.xml)~="<failure"; file(x.json)!~="bad"; json.a.0.b="x"; '
                     'json(where.json).bad_links=[]; json.n=null')
    assert e.exits == (0, 1)
    c = e.clauses
    assert c[0] == Clause("stdout", "~", text="a; b", source='stdout~="a; b"')
    assert c[1].op == "!~" and c[1].regex == r"gpu-00[1-3]\b"
    assert c[2].target == "stderr" and c[2].text == 'say "hi"\n'
    assert c[3].target == "file:out/r.xml" and c[3].text == "<failure"
    assert c[4].target == "file:x.json" and c[4].op == "!~"
    assert c[5].target == "json" and c[5].path == ("a", 0, "b") and c[5].value == "x"
    assert c[6].target == "json:where.json" and c[6].path == ("bad_links",) and c[6].value == []
    assert c[7].value is None


@pytest.mark.parametrize("bad, message", [
    ("exit=0; exit=1", "exit given twice"),
    ("exit=300", "0..255"),
    ("exit=zero", "cannot read clause"),
    ('exit=0; stdout~=gpu', 'the pattern is a "string" or a /regex/'),
    ('exit=0; stdout~=""', "bad string literal"),
    ("exit=0; stdout~=/a(/", "bad regex"),
    ("exit=0; json.a=not json", "JSON literal"),
    ('exit=0; file(../x)~="a"', "file name"),
    ('exit=0; stdout~="open', "unterminated"),
    ("exit=0; output~=\"x\"", "cannot read clause"),
])
def test_bad_clauses(bad: str, message: str) -> None:
    with pytest.raises(RunbookError, match=re.escape(message)):
        parse_expect(bad, 7)


def test_split_clauses_keeps_separators_inside_quotes_and_regexes() -> None:
    assert split_clauses('exit=1; stdout~="a;b"; stderr~=/x;y/;') == ['exit=1', 'stdout~="a;b"', 'stderr~=/x;y/']


def test_verify() -> None:
    e = parse_expect('exit=1; stdout~="gpu-003"; stdout!~="gpu-004"; stderr~=/^clusterkit: /; '
                     'file(r.xml)~="<failure"; json.summary.failed=1; json(w.json).exclude="gpu-003"')
    files = {"r.xml": "<testsuite><failure/></testsuite>", "w.json": '{"exclude": "gpu-003"}'}
    out = '{"summary": {"failed": 1}, "note": "gpu-003"}'
    assert e.verify(1, out, "x\nclusterkit: warning\n", files.get) == []
    problems = e.verify(0, '{"summary": {"failed": 2}, "n": "gpu-004"}', "", {}.get)
    assert problems == [
        "exit 0, expected 1",
        'stdout~="gpu-003": not found',
        'stdout!~="gpu-004": found',
        "stderr~=/^clusterkit: /: not found",
        'file(r.xml)~="<failure": no such file',
        "json.summary.failed=1: got 2",
        'json(w.json).exclude="gpu-003": no such file',
    ]
    assert parse_expect("exit=0; json.a.5=1").verify(0, '{"a": [1]}', "") == ["json.a.5=1: no such path"]
    assert parse_expect("exit=0; json.a=1").verify(0, "not json", "")[0].startswith("json.a=1: not JSON")


def test_expectation_defaults() -> None:
    assert Expectation(exits=(0,)).verify(0, "", "") == []


# ----------------------------------------------------------------------------- commands
def test_last_command_start() -> None:
    assert last_command_start("a\nb\n") == 2
    assert last_command_start("a\nb \\\n  --c \\\n  --d\n\n# note\n") == 2
    assert last_command_start("# intro\n\nsolo\n") == 3


def test_script_and_earlier_failure_with_real_bash(tmp_path: Path) -> None:
    """The script the rehearsal runs: a failure before the last command stops the block and is
    told apart; the last command's status is the block's."""
    book = parse("<!-- expect: exit=3 -->\n```sh\ntrue\nfalse\n(exit 3)\n```\n"
                 "<!-- expect: exit=3 -->\n```sh\ntrue\necho hi \\\n  >/dev/null\nsh -c 'exit 3'\n```\n"
                 "<!-- expect: exit=1 -->\n```sh\ntrue\n! grep -q x <<< \"x\"\n```\n")
    results = []
    for i, step in enumerate(book.commands):
        err = tmp_path / f"err{i}"
        p = subprocess.run(["bash", "-c", script(step, str(err))], capture_output=True, text=True)
        line = int(err.read_text()) if err.exists() else None
        results.append((p.returncode, earlier_failure(step, line)))
    assert results == [(1, 2), (3, None), (1, None)]


# ----------------------------------------------------------------------------- lint
def test_lint_wants_the_exit_codes_in_the_prose() -> None:
    book = parse("# t\n<!-- expect: exit=0|3 -->\n```sh\nls\n```\nIt exits 0.\n")
    assert lint(book) == ["line 3 (t): the prose after the block does not say 'exits 3'"]
    assert lint(parse("# t\n<!-- expect: exit=0|3 -->\n```sh\nls\n```\nIt exits 0 or 3.\n")) == []
    assert lint(parse("# t\n<!-- expect: exit=1 -->\n```sh\nls\n```\nExit code 1: stop.\n")) == []


# ----------------------------------------------------------------------------- the runbooks
def test_there_are_the_six_runbooks() -> None:
    assert {p.stem for p in RUNBOOKS} >= {"bring-up", "back-from-repair", "nightly-sweep", "nccl-slow",
                                          "xid-storm", "driver-rollout"}


@pytest.mark.parametrize("path", RUNBOOKS, ids=[p.stem for p in RUNBOOKS])
def test_runbook_keeps_the_convention(path: Path) -> None:
    book = parse(path.read_text())
    assert lint(book) == []
    for step in book.commands:
        assert "clusterkit" in step.code or "sinfo" in step.code or "scontrol" in step.code \
            or "grep" in step.code, step.where
    for f in book.files:  # every file a runbook writes is used by one of its commands
        assert any(f.path in s.code for s in book.commands), f.path


def test_index_lists_every_runbook() -> None:
    index = (RUNBOOK_DIR / "README.md").read_text()
    for p in RUNBOOKS:
        assert f"]({p.name})" in index, p.name
    assert "](runbooks/README.md)" in (ROOT / "docs" / "index.md").read_text()
