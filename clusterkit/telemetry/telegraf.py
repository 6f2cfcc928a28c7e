"""A Telegraf configuration for the nodes, rendered from a Jinja2 template by one pure function.

:func:`render_telegraf_config` takes :class:`TelegrafParams` and returns the text of a
``telegraf.conf``: ``inputs.exec`` running ``clusterkit node-check --format influx`` (the points of
docs/metrics.md), ``inputs.nvidia_smi``, ``inputs.infiniband`` and ``outputs.influxdb_v2``, each of
which a parameter turns off. Nothing is read from the environment, the clock or the machine, so
one input always gives the same file (golden files compare it byte for byte).

Quoting is the template's job, with these filters and nothing else (a test checks that every
``{{ … }}`` of the template ends in one of them):

``toml_str``
    one TOML basic string (``"…"``) holding the value exactly: ``"`` and ``\\`` escaped, control
    characters and other unprintable ones as ``\\b \\t \\n \\f \\r`` or ``\\uXXXX``. Then every ``$``
    is doubled: Telegraf replaces ``${VAR}`` and ``$VAR`` in its configuration with environment
    variables (before or after the TOML is parsed, depending on its env-handling mode) and reads
    ``$$`` as one ``$`` in both modes (Telegraf 1.27 and later, without ``--old-env-behavior``).
    Without that, a bucket named ``${INFLUX_TOKEN}`` would put the token in the file Telegraf
    reads, and ``--weights-dir $HOME/w`` would not reach node-check as written.
``toml_array``
    a TOML array of such strings; a list of lists is an array of arrays (``inputs.exec``'s
    ``commands``).
``toml_bool`` / ``toml_key``
    ``true``/``false``; a bare key (``[0-9A-Za-z_-]+``; global tag names are checked to be
    such, so no key is ever quoted).

The escapes are those both Telegraf's TOML parser (influxdata/toml: no raw tab or DEL in a basic
string, no ``\\e``) and TOML 1.0 accept.

The InfluxDB token is never a parameter and never in the file: the output reads it from the
environment, ``token = "${INFLUX_TOKEN}"``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from importlib import resources
from typing import Annotated, Any, Callable, Optional, Union
from urllib.parse import urlsplit

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator, \
    model_validator

from clusterkit.config import Bool, invalid, split_words
from clusterkit.errors import UsageError

#: The template, in ``clusterkit/telemetry/templates/``.
TEMPLATE = "telegraf.conf.j2"
#: What node-check is run with, after the clusterkit command and before ``node_check_args``.
NODE_CHECK_ARGS = ("node-check", "--format", "influx")
#: Telegraf's first version that reads this file: ``inputs.exec`` commands as argv arrays.
MIN_TELEGRAF = "1.39.0"

#: node-check options that would change what it prints (no longer line protocol) or make it act
#: on Slurm or wait on stdin: refused in ``node_check_args``.
_REFUSED_ARGS = ("--format", "--json", "--nagios", "--healthcheck", "--lifeline", "--help", "-h",
                 "--dry-run", "--no-slurm-action")
#: Tags of clusterkit's points that a global tag must not name (Telegraf adds a global tag to
#: every metric without that tag: it would turn up on points that mean something else by it).
#: ``partition`` and ``profile`` are allowed: node-check's points have no partition tag, and a
#: global one gives them the tag the dashboards filter on.
_REFUSED_TAGS = ("host", "check", "gpu", "peer_gpu", "device", "port", "link", "path", "subject", "n")

_DURATION_RE = re.compile(r"^(?:(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:ns|us|µs|μs|ms|s|m|h))+$")
_DURATION_PART_RE = re.compile(r"([0-9]*\.?[0-9]*)(ns|us|µs|μs|ms|s|m|h)")
_UNIT_S = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]{0,63}$")
_SURROGATE_RE = re.compile(r"[\ud800-\udfff]")
_GLOB_CHARS = frozenset("*?[\\")
MAX_TEXT = 4096


# --------------------------------------------------------------------------- value types
def _text(value: Any) -> Any:
    """A string value: not empty, at most :data:`MAX_TEXT` characters, no NUL, valid Unicode.
    Anything else (quotes, backslashes, line breaks, ``$``, ``]]``) is kept exactly: the filters
    quote it."""
    if isinstance(value, bool) or not isinstance(value, str):
        raise invalid(f"give a string, not {type(value).__name__}")
    if not value:
        raise invalid("must not be empty")
    if len(value) > MAX_TEXT:
        raise invalid(f"longer than {MAX_TEXT} characters")
    if "\x00" in value:
        raise invalid("a NUL character cannot be passed on")
    if _SURROGATE_RE.search(value):
        raise invalid("not valid Unicode (a lone surrogate)")
    return value


def _one_or_more(value: Any) -> Any:
    """A list parameter also takes one string as a list of one."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, tuple):
        return list(value)
    return value


def duration_s(text: str) -> float:
    """Seconds of a Go duration (``5m``, ``1h30m``, ``2.5s``), as Telegraf reads it."""
    return sum(float(n) * _UNIT_S[u] for n, u in _DURATION_PART_RE.findall(text))


def _duration(value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, str):
        raise invalid(f"give a duration as a string ('5m', '30s'), not {type(value).__name__}")
    if not _DURATION_RE.match(value):
        raise invalid(f"{value!r} is not a duration (a number and a unit: ns, us, ms, s, m, h; '5m', '1h30m')")
    if duration_s(value) <= 0:
        raise invalid(f"{value!r}: must be above zero")
    return value


def _url(value: Any) -> Any:
    value = _text(value)
    if re.search(r"[\s\x00-\x1f\x7f]", value):
        raise invalid(f"{value!r} is not a URL (white space or a control character)")
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError as e:
        raise invalid(f"{value!r} is not a URL: {e}") from None
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise invalid(f"{value!r} is not an http:// or https:// URL")
    return value


def _tag_key(value: Any) -> Any:
    if not isinstance(value, str) or not _KEY_RE.match(value):
        raise invalid(f"{value!r} is not a tag name (a letter or '_', then letters, digits, '_', '-'; "
                      "at most 64)")
    if value in _REFUSED_TAGS:
        raise invalid(f"{value!r} is a tag of clusterkit's own points: a global tag of that name would "
                      "be added where it means something else")
    return value


#: One string, kept exactly.
Text = Annotated[str, BeforeValidator(_text)]
#: A list of words (one string is split like a shell would).
Words = Annotated[list[Text], BeforeValidator(split_words), Field(max_length=256)]
#: A Go duration, as Telegraf's settings take them.
Duration = Annotated[str, BeforeValidator(_duration)]
Url = Annotated[str, BeforeValidator(_url)]
TagKey = Annotated[str, BeforeValidator(_tag_key)]


# --------------------------------------------------------------------------- parameters
class TelegrafParams(BaseModel):
    """What :func:`render_telegraf_config` takes. Unknown keys are refused; so is a token (it is
    never a parameter: Telegraf reads ``$INFLUX_TOKEN``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    def __init__(self, **data: Any) -> None:
        """Bad values are one :class:`UsageError` line (pydantic calls this for
        ``model_validate`` too)."""
        try:
            super().__init__(**data)
        except ValidationError as e:
            raise _ParamsError(e) from None

    #: ``inputs.exec`` running node-check (off: no exec input)
    node_check: Bool = True
    #: how to start clusterkit on the node: a path, or several words (``python3 -m clusterkit``)
    clusterkit_command: Words = Field(default_factory=lambda: ["clusterkit"])
    #: more node-check arguments, after ``node-check --format influx`` (``--profile h200-sxm``)
    node_check_args: Words = Field(default_factory=list)
    #: the agent's collection interval (every input)
    interval: Duration = "5m"
    #: ``inputs.exec``'s timeout for node-check (Telegraf's default, 5 s)
    exec_timeout: Duration = "5s"
    #: ``outputs.influxdb_v2`` (off: no output here; Telegraf then needs one from another file)
    influx_output: Bool = True
    influx_urls: Annotated[list[Url], BeforeValidator(_one_or_more), Field(max_length=64)] = \
        Field(default_factory=list)
    influx_org: Optional[Text] = None
    influx_bucket: Optional[Text] = None
    #: ``inputs.nvidia_smi``
    nvidia_smi: Bool = True
    #: its ``bin_path`` (default: Telegraf's, /usr/bin/nvidia-smi, else nvidia-smi on PATH)
    nvidia_smi_bin: Optional[Text] = None
    #: ``inputs.infiniband``
    infiniband: Bool = True
    #: its ``gather_rdma``: the RDMA counters as well (Telegraf 1.34 and later)
    gather_rdma: Bool = True
    #: ``[global_tags]``: added to every metric that lacks the tag (``cluster = "prod"``,
    #: ``partition = "gpu"``)
    global_tags: Annotated[dict[TagKey, Text], Field(max_length=64)] = Field(default_factory=dict)

    @field_validator("clusterkit_command")
    @classmethod
    def _command(cls, value: list[str]) -> list[str]:
        if not value:
            raise invalid("give the command that starts clusterkit (at least one word)")
        if _GLOB_CHARS.intersection(value[0]):
            # Telegraf expands the program of an exec command as a glob pattern (filepath.Glob)
            raise invalid(f"{value[0]!r}: Telegraf would read '*', '?', '[' or '\\' in the program's "
                          "name as a glob pattern")
        return value

    @field_validator("node_check_args")
    @classmethod
    def _args(cls, value: list[str]) -> list[str]:
        for arg in value:
            name = arg.split("=", 1)[0]
            if name in _REFUSED_ARGS:
                raise invalid(f"{arg!r}: node-check under Telegraf prints line protocol (--format influx) "
                              "and acts on nothing; that option is not for it")
        return value

    @model_validator(mode="after")
    def _whole(self) -> "TelegrafParams":
        if not (self.node_check or self.nvidia_smi or self.infiniband):
            raise invalid("every input is off (node_check, nvidia_smi, infiniband): nothing to collect")
        if self.influx_output:
            missing = [k for k, v in (("influx_urls", self.influx_urls), ("influx_org", self.influx_org),
                                      ("influx_bucket", self.influx_bucket)) if not v]
            if missing:
                raise invalid(f"the InfluxDB output needs {', '.join(missing)} (or turn it off: influx_output)")
        if self.node_check and duration_s(self.exec_timeout) > duration_s(self.interval):
            raise invalid(f"exec_timeout {self.exec_timeout} is longer than interval {self.interval}: "
                          "Telegraf would skip collections while node-check still runs")
        return self

    def node_check_argv(self) -> list[str]:
        """The argv ``inputs.exec`` runs."""
        return [*self.clusterkit_command, *NODE_CHECK_ARGS, *self.node_check_args]


def make_params(values: Mapping[str, Any], *, names: Optional[Mapping[str, str]] = None) -> TelegrafParams:
    """:class:`TelegrafParams` from a mapping; any problem is one :class:`UsageError` line naming
    the parameter (or, through ``names``, the option that set it)."""
    try:
        return TelegrafParams.model_validate(dict(values))
    except _ParamsError as e:
        raise UsageError(_message(e.validation_error, names or {})) from None
    except ValidationError as e:  # should __init__ not be the one that validated
        raise UsageError(_message(e, names or {})) from None


class _ParamsError(UsageError):
    """The :class:`UsageError` of bad parameters; keeps pydantic's errors so that
    :func:`make_params` can name the options that set them."""

    def __init__(self, e: ValidationError) -> None:
        super().__init__(_message(e, {}))
        self.validation_error = e


def _message(e: ValidationError, names: Mapping[str, str]) -> str:
    """One line for the first problem, naming the parameter (or its option, through ``names``)."""
    errs = e.errors()
    first: Mapping[str, Any] = errs[0] if errs else {}
    loc = [str(p) for p in first.get("loc", ())]
    msg = " ".join(str(first.get("msg", "invalid")).split())
    if first.get("type") == "extra_forbidden":
        key = ".".join(loc)
        hint = " (the token is never a parameter: Telegraf reads $INFLUX_TOKEN)" if "token" in key else ""
        return (f"telegraf config: unknown parameter {key!r}{hint}; its parameters: "
                f"{', '.join(TelegrafParams.model_fields)}")
    if not loc:  # a rule between parameters: its message names them
        for param, option in names.items():
            msg = re.sub(rf"\b{re.escape(param)}\b", option, msg)
        return f"telegraf config: {msg}"
    if loc[0] in names:  # an option: '--global-tag cluster', '--influx-url' (no list index)
        where = " ".join([names[loc[0]], *(p for p in loc[1:] if not p.isdigit() and p != "[key]")])
    else:
        where = ".".join(loc)
    return f"telegraf config: {where}: {msg}"


# --------------------------------------------------------------------------- filters
_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}


def _as_text(value: Any, who: str) -> str:
    if isinstance(value, str):
        return value
    if value is None or isinstance(value, (bool, bytes, list, tuple, dict, set, float)):
        raise UsageError(f"{who}: give a string, not {type(value).__name__}")
    return str(value)  # an int; StrictUndefined raises here


def toml_basic(value: Any) -> str:
    """``value`` as one TOML basic string, exactly (TOML 1.0 and Telegraf's parser alike): ``"``
    and ``\\`` escaped; control characters, DEL and any other unprintable character (line and
    paragraph separators, bidi controls, lone surrogates refused) as escapes."""
    text = _as_text(value, "toml_str")
    out: list[str] = []
    for ch in text:
        esc = _ESCAPES.get(ch)
        if esc is not None:
            out.append(esc)
            continue
        o = ord(ch)
        if 0xD800 <= o <= 0xDFFF:
            raise UsageError(f"toml_str: {text[:40]!r}: not valid Unicode (a lone surrogate)")
        if o < 0x20 or o == 0x7F or (o > 0x7F and not ch.isprintable()):
            out.append(f"\\u{o:04X}" if o <= 0xFFFF else f"\\U{o:08X}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def toml_str(value: Any) -> str:
    """``value`` as one TOML basic string for a Telegraf configuration: :func:`toml_basic` with
    every ``$`` doubled, so Telegraf's environment substitution gives the value back as written."""
    return toml_basic(_as_text(value, "toml_str").replace("$", "$$"))


def toml_array(values: Any) -> str:
    """A list as a TOML array of :func:`toml_str` strings; a list of lists as an array of arrays."""
    if isinstance(values, (str, bytes, Mapping)) or not isinstance(values, (list, tuple)):
        raise UsageError(f"toml_array: give a list, not {type(values).__name__}")
    items = [toml_array(v) if isinstance(v, (list, tuple)) else toml_str(v) for v in values]
    return "[" + ", ".join(items) + "]"


def toml_bool(value: Any) -> str:
    if not isinstance(value, bool):
        raise UsageError(f"toml_bool: give true or false, not {type(value).__name__}")
    return "true" if value else "false"


def toml_key(value: Any) -> str:
    """A bare TOML key; anything else is refused (never quoted: Telegraf's parser does not read
    escapes in quoted keys as TOML does)."""
    text = _as_text(value, "toml_key")
    if not re.fullmatch(r"[A-Za-z0-9_-]+", text):
        raise UsageError(f"toml_key: {text!r} is not a bare key (letters, digits, '_', '-')")
    return text


#: The filters the template may use; every ``{{ … }}`` ends in one of them.
FILTERS: dict[str, Callable[[Any], str]] = {"toml_str": toml_str, "toml_array": toml_array,
                                            "toml_bool": toml_bool, "toml_key": toml_key}


# --------------------------------------------------------------------------- render
def _template_source(filename: str) -> Optional[tuple[str, str, Callable[[], bool]]]:
    res = resources.files("clusterkit.telemetry") / "templates" / filename
    if not res.is_file():
        return None
    # a label, not this machine's path: it shows in error messages
    return res.read_text(encoding="utf-8"), f"clusterkit/telemetry/templates/{filename}", lambda: True


def _environment() -> Any:
    import jinja2

    env = jinja2.Environment(loader=jinja2.FunctionLoader(_template_source), undefined=jinja2.StrictUndefined,
                             autoescape=False, keep_trailing_newline=True, trim_blocks=True, lstrip_blocks=True)
    env.filters.update(FILTERS)
    return env


def render_telegraf_config(params: Union[TelegrafParams, Mapping[str, Any]]) -> str:
    """The ``telegraf.conf`` for ``params`` (a mapping is checked first, :func:`make_params`)."""
    if not isinstance(params, TelegrafParams):
        params = make_params(params)
    context = params.model_dump()
    context["exec_commands"] = [params.node_check_argv()]
    template = _environment().get_template(TEMPLATE)
    return str(template.render(**context))


__all__ = ["TelegrafParams", "make_params", "render_telegraf_config", "toml_basic", "toml_str", "toml_array",
           "toml_bool", "toml_key", "duration_s", "FILTERS", "TEMPLATE", "NODE_CHECK_ARGS", "MIN_TELEGRAF"]
