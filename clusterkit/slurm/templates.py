"""Slurm job templates: sbatch scripts rendered from Jinja2 templates by one pure function.

:func:`render` takes a template name and its parameters and returns the script text; nothing is
read from the environment, the clock or Slurm, so one input always gives the same script (golden
files compare it byte for byte) and ``clusterkit slurm render`` can show exactly what would be
submitted.

Quoting is the template's job, and it has one tool: every value that reaches the script goes
through the ``shq`` filter (one shell word, :func:`shlex.quote`) or ``shq_join`` (a list, each
item one word). sbatch reads ``#SBATCH`` lines with the same quoting rules, so a job name like
``x"; rm -rf / #`` stays a job name there too. A value with a line break is refused: in a
``#SBATCH`` comment it would end the comment and start a command. Values known only when the
job runs (the node list, a task's rank) are never put in by Jinja: the script reads them from
Slurm's environment (``$SLURM_JOB_NODELIST``, ``$SLURM_LOCALID``) at run time.

Built-in templates (``clusterkit/slurm/templates/NAME.sbatch.j2``) have a parameter model each
(:data:`PARAMS`): unknown keys and bad values are refused with one line naming the parameter,
before anything is rendered. A user's template directory is searched first, so it can replace a
built-in (which still gets the built-in's validated parameters) or add templates of other names
(whose parameters are passed through as given: the template is the only judge of them).
"""

from __future__ import annotations

import os
import re
import shlex
import traceback
from importlib import resources
from typing import Annotated, Any, Callable, Mapping, Optional, Union, get_args, get_origin

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator, \
    model_validator

from clusterkit.config import MAX_GPUS, Bool, Int, Num, first_error, invalid, split_words
from clusterkit.errors import UsageError

#: Every template file is ``NAME`` + this suffix, built-in or the user's.
SUFFIX = ".sbatch.j2"
#: What a template name may be: a file name without directories.
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")

#: The built-in templates and what each is for (``clusterkit slurm render --list``).
TEMPLATES: dict[str, str] = {
    "validate": "a batch job that validates its whole allocation (validate --via slurm) into one report",
    "nccl": "an nccl-tests job across the allocation, one task per GPU, through srun's MPI plugin",
}

_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
_TIME_RE = re.compile(r"^(?:[0-9]+(?::[0-9]{1,2}){0,2}|[0-9]+-[0-9]{1,2}(?::[0-9]{1,2}){0,2}|UNLIMITED|INFINITE)$")
_SIZE_RE = re.compile(r"^([0-9]{1,18})([KMGkmg]?)$")
_ASSIGNMENT_LIKE = re.compile(r"^(?:=|[A-Za-z_][A-Za-z0-9_]*=)")
_ENV_NAME_RE = re.compile(r"^[A-Z_][A-Z0-9_]*$")
#: Variables that change how the job script's own shell (or the one each task starts) behaves.
_ENV_REFUSED = frozenset({"IFS", "BASH_ENV", "ENV", "SHELLOPTS", "BASHOPTS", "PS4", "CDPATH", "GLOBIGNORE"})


# --------------------------------------------------------------------------- value types
def _text(value: Any) -> Any:
    """A string parameter also takes a whole number (``account: 1234`` in YAML), never a flag."""
    if isinstance(value, bool):
        raise invalid("give a string, not true/false")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        if not value:
            raise invalid("must not be empty")
        if len(value) > 4096:
            raise invalid("longer than 4096 characters")
        if _CONTROL_RE.search(value):
            raise invalid("control characters (a line break, a tab) cannot be put in a job script")
    return value


def _sbatch_text(value: Any) -> Any:
    """What goes on a ``#SBATCH`` line: sbatch reads those with its own quoting, where a
    backslash escapes even inside quotes (a shell-quoted one would be lost, or end the line)."""
    value = _text(value)
    if isinstance(value, str) and "\\" in value:
        raise invalid("a backslash cannot be put on an #SBATCH line (sbatch would read it as an escape)")
    return value


def _time(value: Any) -> Any:
    if isinstance(value, int) and not isinstance(value, bool):
        # YAML reads an unquoted 1:30:00 as 5400: a number here is ambiguous, so it is refused
        raise invalid(f"give the time as a string ('{value}' for minutes, '01:30:00'): YAML reads an "
                      "unquoted H:MM:SS as a number of seconds")
    value = _text(value)
    if isinstance(value, str) and not _TIME_RE.match(value):
        raise invalid(f"{value!r} is not a Slurm time (MINUTES, HH:MM:SS, D-HH[:MM[:SS]], UNLIMITED)")
    return value


def _size(value: Any) -> Any:
    value = _text(value)
    if isinstance(value, str) and not _SIZE_RE.match(value):
        raise invalid(f"{value!r} is not a size in bytes (a whole number, optionally with K, M or G)")
    return value


def _bytes(size: str) -> int:
    m = _SIZE_RE.match(size)
    assert m is not None  # validated
    return int(m.group(1)) * {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}[m.group(2).lower()]


#: One line of text (no control characters); a whole number is taken as its digits.
Text = Annotated[str, BeforeValidator(_text)]
#: Text for an ``#SBATCH`` line: no backslash either.
SbatchText = Annotated[str, BeforeValidator(_sbatch_text)]
#: A list of words (one string is split like a shell would).
Words = Annotated[list[Text], BeforeValidator(split_words), Field(max_length=256)]
SlurmTime = Annotated[str, BeforeValidator(_time)]
Size = Annotated[str, BeforeValidator(_size)]


# --------------------------------------------------------------------------- parameter models
class JobParams(BaseModel):
    """What every built-in template's ``#SBATCH`` header takes."""

    model_config = ConfigDict(extra="forbid")

    job_name: SbatchText = "clusterkit"
    nodes: Int = Field(default=1, ge=1, le=100_000)
    gpus_per_node: Int = Field(default=8, ge=0, le=MAX_GPUS)
    time: SlurmTime = "00:30:00"
    #: sbatch -o: Slurm's own patterns (%x job name, %j job id, %N first node) work here
    output_file: SbatchText = "%x-%j.out"
    partition: Optional[SbatchText] = None
    account: Optional[SbatchText] = None
    reservation: Optional[SbatchText] = None
    exclusive: Bool = True
    #: more #SBATCH options, each one word (``--constraint=h100``, ``--qos=high``)
    sbatch_options: Annotated[list[SbatchText], BeforeValidator(split_words), Field(max_length=256)] = \
        Field(default_factory=list)

    @field_validator("sbatch_options")
    @classmethod
    def _options(cls, value: list[str]) -> list[str]:
        for opt in value:
            if not opt.startswith("-"):
                raise invalid(f"{opt!r} is not an sbatch option (give each as one word: --constraint=h100)")
        return value


class ValidateParams(JobParams):
    """``validate``: one batch job that validates the nodes of its own allocation."""

    job_name: SbatchText = "clusterkit-validate"
    #: how to start clusterkit on the batch node (and, through validate, on every node)
    clusterkit_command: Words = Field(default_factory=lambda: ["clusterkit"])
    #: the JSON report; %j becomes the job id when the job runs
    report: Text = "clusterkit-report-%j.json"
    junit: Optional[Text] = None
    profile: Optional[Text] = None
    checks: list[Annotated[str, Field(pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$", max_length=200)]] = \
        Field(default_factory=list, max_length=256)
    timeout: Optional[Num] = Field(default=None, gt=0, le=86400)
    #: a simulated fleet: 'builtin' (or true) for the built-in one, else a fleet file
    sim: Union[Bool, Text, None] = None
    ib_bw: Bool = False
    storage_bench: Bool = False
    stress: Bool = False
    #: more validate arguments (--baseline NAME, --weights-dir DIR, -v)
    extra_args: Words = Field(default_factory=list)

    @field_validator("clusterkit_command")
    @classmethod
    def _command(cls, value: list[str]) -> list[str]:
        if not value:
            raise invalid("give the command that starts clusterkit (at least one word)")
        return value

    @field_validator("checks", mode="before")
    @classmethod
    def _split_checks(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [c.strip() for c in value.split(",") if c.strip()]
        return value

    @field_validator("sim", mode="before")
    @classmethod
    def _sim(cls, value: Any) -> Any:
        if value is True:
            return "builtin"
        if value is False:
            return None
        return value


class NcclParams(JobParams):
    """``nccl``: nccl-tests over the allocation, one task (one MPI rank) per GPU."""

    job_name: SbatchText = "clusterkit-nccl"
    gpus_per_node: Int = Field(default=8, ge=1, le=MAX_GPUS)
    #: the directory holding the nccl-tests binaries (…/nccl-tests/build), the same on every node
    nccl_tests_dir: Text
    test: Annotated[str, Field(max_length=100)] = "all_reduce_perf"
    min_bytes: Size = "8"
    max_bytes: Size = "16G"
    step_factor: Int = Field(default=2, ge=2, le=1024)
    iters: Int = Field(default=20, ge=1, le=1_000_000)
    warmup_iters: Int = Field(default=5, ge=0, le=1_000_000)
    check: Int = Field(default=1, ge=0, le=1_000_000)
    #: srun --mpi= plugin (pmix, pmix_v4, pmi2, …: `srun --mpi=list`)
    mpi: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$", max_length=40)] = "pmix"
    #: exported before srun (NCCL_*, UCX_*, …)
    env: dict[str, Text] = Field(default_factory=dict, max_length=256)
    #: bind each task to one GPU (CUDA_VISIBLE_DEVICES chosen inside the task from SLURM_LOCALID)
    one_gpu_per_task: Bool = False
    #: more nccl-tests arguments (-t, -g, -a, -z, …)
    extra_args: Words = Field(default_factory=list)

    @field_validator("test")
    @classmethod
    def _test(cls, value: str) -> str:
        if not re.match(r"^[a-z_]+_perf$", value):
            raise invalid(f"{value!r} is not an nccl-tests binary name (all_reduce_perf, all_gather_perf, …)")
        return value

    @field_validator("env", mode="before")
    @classmethod
    def _env(cls, value: Any) -> Any:
        if not isinstance(value, Mapping):
            return value
        out: dict[Any, Any] = {}
        for name, v in value.items():
            if not isinstance(name, str) or not _ENV_NAME_RE.match(name):
                raise invalid(f"{name!r} is not an environment variable name (^[A-Z_][A-Z0-9_]*$)")
            if name in _ENV_REFUSED:
                raise invalid(f"{name} changes how the job script's shell behaves: refused")
            if isinstance(v, float) and not isinstance(v, bool):
                v = format(v, "g")
            out[name] = v
        return out

    @model_validator(mode="after")
    def _range(self) -> "NcclParams":
        if _bytes(self.min_bytes) > _bytes(self.max_bytes):
            raise invalid(f"min_bytes ({self.min_bytes}) is above max_bytes ({self.max_bytes})")
        return self


#: The parameter model of every built-in template.
PARAMS: dict[str, type[JobParams]] = {"validate": ValidateParams, "nccl": NcclParams}


def string_params(name: str) -> frozenset[str]:
    """The parameters of built-in template ``name`` that are plain text, for the CLI: their
    ``--set`` values are taken as written, not read as YAML (which turns ``on`` into true and
    cuts ``a #b`` at the ``#``). Empty for other templates."""
    model = PARAMS.get(name)
    if model is None:
        return frozenset()
    return frozenset(key for key, field in model.model_fields.items() if _is_text(field.annotation))


def _is_text(ann: Any) -> bool:
    """Whether an annotation is ``str`` or ``Optional[str]`` (Annotated or not)."""
    if get_origin(ann) is Union:
        args = [a for a in get_args(ann) if a is not type(None)]
        if len(args) != 1 or len(get_args(ann)) != 2:
            return False
        ann = args[0]
    if get_origin(ann) is Annotated:
        ann = get_args(ann)[0]
    return ann is str


def validate_params(name: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """The parameters of built-in template ``name`` checked and completed with the defaults;
    anything else is refused with one line naming the parameter."""
    model = PARAMS[name]
    try:
        return model.model_validate(dict(params)).model_dump()
    except ValidationError as e:
        errs = e.errors()
        first: Mapping[str, Any] = errs[0] if errs else {}
        key = ".".join(str(p) for p in first.get("loc", ()))
        if first.get("type") == "extra_forbidden":
            raise UsageError(f"template {name}: unknown parameter {key!r} (its parameters: "
                             f"{', '.join(model.model_fields)})") from None
        if first.get("type") == "missing":
            raise UsageError(f"template {name}: {key}: a required parameter (it has no default)") from None
        if not key:  # a rule between parameters: its message names them
            raise UsageError(f"template {name}: {first.get('msg', 'invalid parameters')}") from None
        raise UsageError(f"template {name}: {first_error(e)}") from None


# --------------------------------------------------------------------------- filters
def shq(value: Any) -> str:
    """One shell word: the value exactly, whatever it holds (``shlex.quote``)."""
    if value is None:
        raise UsageError("shq: the value is unset (None); test it with {% if … %} first")
    text = str(value)  # StrictUndefined raises here
    if "\n" in text or "\r" in text or "\x00" in text:
        raise UsageError(f"shq: {text[:40]!r}…: a value with a line break cannot be put in a job script")
    if _ASSIGNMENT_LIKE.match(text):
        # a first word NAME=x would be an assignment, and a leading '=' puzzles readers and
        # linters: quoted although shlex would not
        return "'" + text.replace("'", "'\"'\"'") + "'"
    return shlex.quote(text)


def shq_join(values: Any) -> str:
    """A list as shell words, each quoted; one string is one word."""
    if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
        return shq(values)
    if isinstance(values, Mapping):
        raise UsageError("shq_join: give a list, not a mapping")
    return " ".join(shq(v) for v in values)


# --------------------------------------------------------------------------- loading
def _builtin_source(filename: str) -> Optional[tuple[str, str, Callable[[], bool]]]:
    res = resources.files("clusterkit.slurm") / "templates" / filename
    if not res.is_file():
        return None
    # a label, not this machine's path: it shows in error messages
    return res.read_text(encoding="utf-8"), f"clusterkit/slurm/templates/{filename}", lambda: True


def _user_dir(template_dir: Optional[str]) -> Optional[str]:
    if template_dir is None:
        return None
    if not os.path.isdir(template_dir):
        raise UsageError(f"template directory {template_dir}: not a directory")
    return template_dir


def _user_names(template_dir: Optional[str]) -> list[str]:
    if template_dir is None:
        return []
    try:
        entries = os.listdir(template_dir)
    except OSError as e:
        raise UsageError(f"template directory {template_dir}: cannot read: {e.strerror or e}") from None
    return sorted(f[: -len(SUFFIX)] for f in entries
                  if f.endswith(SUFFIX) and NAME_RE.match(f[: -len(SUFFIX)]))


def known_templates(template_dir: Optional[str] = None) -> dict[str, str]:
    """Every template name render() accepts, with its one-line doc: the built-ins, then the
    user's (a user template of a built-in name is marked as replacing it)."""
    user = _user_names(_user_dir(template_dir))
    out: dict[str, str] = {}
    for name, doc in TEMPLATES.items():
        out[name] = f"{doc} (replaced by {template_dir}/{name}{SUFFIX})" if name in user else doc
    for name in user:
        if name not in out:
            out[name] = f"user template {template_dir}/{name}{SUFFIX} (parameters passed as given)"
    return out


def _environment(template_dir: Optional[str]) -> Any:
    import jinja2

    loaders: list[Any] = []
    if template_dir is not None:
        loaders.append(jinja2.FileSystemLoader(template_dir))
    loaders.append(jinja2.FunctionLoader(_builtin_source))
    env = jinja2.Environment(loader=jinja2.ChoiceLoader(loaders), undefined=jinja2.StrictUndefined,
                             autoescape=False, keep_trailing_newline=True, trim_blocks=True,
                             lstrip_blocks=True)
    env.filters["shq"] = shq
    env.filters["shq_join"] = shq_join
    return env


def _where(exc: BaseException, main_file: Optional[str]) -> str:
    """'line N: ' of the template line an error was raised on (Jinja puts template lines in the
    traceback), with the file's name when it is an included one."""
    lineno = getattr(exc, "lineno", None)
    filename = getattr(exc, "filename", None)
    if lineno is None:
        for frame in reversed(traceback.extract_tb(exc.__traceback__)):
            if frame.filename.endswith(".j2"):
                lineno, filename = frame.lineno, frame.filename
                break
    if lineno is None:
        return ""
    other = f"{os.path.basename(filename)} " if filename and filename != main_file else ""
    return f"{other}line {lineno}: "


# --------------------------------------------------------------------------- render
def render(name: str, params: Mapping[str, Any], *, template_dir: Optional[str] = None) -> str:
    """The job script of template ``name`` with ``params``.

    ``template_dir`` is searched before the built-in templates. Every problem (an unknown
    template, a bad parameter, an undefined variable or a syntax error in a template) is one
    :class:`UsageError` line.
    """
    import jinja2

    user_dir = _user_dir(template_dir)
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise UsageError(f"{name!r} is not a template name (letters, digits, '.', '_', '-')")
    filename = name + SUFFIX
    env = _environment(user_dir)
    try:
        _, main_file, _ = env.loader.get_source(env, filename)
    except jinja2.TemplateNotFound:
        known = ", ".join(known_templates(user_dir))
        where = f" (in {user_dir} or built in)" if user_dir is not None else ""
        raise UsageError(f"unknown template {name!r}{where}; known: {known}") from None
    if name in PARAMS:
        context = validate_params(name, params)
    else:
        bad = [k for k in params if not isinstance(k, str) or not k.isidentifier()]
        if bad:
            raise UsageError(f"template {name}: {bad[0]!r} is not a parameter name")
        context = dict(params)
    context.setdefault("template_name", name)
    try:
        template = env.get_template(filename)
        return str(template.render(**context))
    except jinja2.TemplateSyntaxError as e:
        raise UsageError(f"template {name}: {_where(e, main_file)}{e.message}") from None
    except jinja2.TemplateNotFound as e:  # an {% include %} / {% extends %} of a missing file
        raise UsageError(f"template {name}: {_where(e, main_file)}no template {e.name!r} to include") from None
    except (jinja2.TemplateError, UsageError) as e:
        msg = getattr(e, "message", None) or str(e)
        raise UsageError(f"template {name}: {_where(e, main_file)}{msg}") from None
    except (TypeError, ValueError, ArithmeticError, LookupError, AttributeError) as e:
        if user_dir is None or not os.path.isfile(os.path.join(user_dir, filename)):
            raise  # a bug in a built-in template: not the user's to fix
        raise UsageError(f"template {name}: {_where(e, main_file)}{type(e).__name__}: {e}") from None


__all__ = ["TEMPLATES", "PARAMS", "SUFFIX", "JobParams", "ValidateParams", "NcclParams", "render",
           "known_templates", "validate_params", "string_params", "shq", "shq_join"]
