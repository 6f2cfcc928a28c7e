"""ssh_config as OpenSSH reads it, for the paramiko transport (pure: no network, no paramiko).

paramiko's own ``SSHConfig`` ignores ``Include`` (every Host block in an included file is lost,
so every node becomes "cannot resolve"), does not restore the enclosing block after an
``Include``, and silently skips options it cannot honour. This module follows ssh_config(5):

- ``Include``: every file a pattern names (``~``, ``${VAR}``, globs, sorted); a relative path is
  taken from ``~/.ssh`` for a user config (and for ``-F``/``--ssh-config``) and from ``/etc/ssh``
  for the system one; an Include inside a Host/Match block only applies when that block does
  (and the block is active again after it); nesting is bounded (16, as OpenSSH).
- ``Host`` patterns (``*``, ``?``, ``!``), ``Match`` with ``all``, ``host``, ``originalhost``,
  ``user``, ``localuser``, ``tagged``, ``canonical`` and ``final`` (a second pass against the
  resolved HostName, like OpenSSH), and negated criteria.
- First obtained value wins; ``IdentityFile``, ``CertificateFile``, ``SendEnv``, ``SetEnv``
  and the forwardings accumulate. ``Keyword=value``, quoted arguments and trailing comments are
  read as OpenSSH reads them. ``%`` tokens (``%h %p %r %u %d %n %l %L %k %i %j %C %%``), ``~``
  and ``${VAR}`` are expanded where OpenSSH expands them.
- Values are checked when the file is read, in every block (as OpenSSH does): a bad ``Port``,
  ``ProxyJump``, yes/no flag, ``AddressFamily`` … is a :class:`ConfigError` naming file and line.
  An unknown keyword is an error unless ``IgnoreUnknown`` covers it.
- Options paramiko cannot honour and that change what happens are *refusals*, reported for the
  hosts they apply to (see :data:`REFUSED`); options that only matter interactively
  (ControlMaster, forwardings, X11, LogLevel …) are accepted and ignored.
"""

from __future__ import annotations

import getpass
import glob
import hashlib
import os
import re
import socket
from dataclasses import dataclass, field
from typing import Optional, Sequence

from clusterkit.errors import ConfigError
from clusterkit.transport.knownhosts import match_pattern, match_pattern_list

MAX_INCLUDE_DEPTH = 16

#: Every keyword OpenSSH's client knows (9.x/10.x, Debian's GSSAPI patch, and the deprecated
#: ones it still accepts). Anything else is "bad configuration option", as for ssh(1).
KNOWN = frozenset("""
host match include
addkeystoagent addressfamily batchmode bindaddress bindinterface canonicaldomains
canonicalizefallbacklocal canonicalizehostname canonicalizemaxdots canonicalizepermittedcnames
casignaturealgorithms certificatefile channeltimeout checkhostip ciphers clearallforwardings
compression connectionattempts connecttimeout controlmaster controlpath controlpersist
dynamicforward enableescapecommandline enablesshkeysign escapechar exitonforwardfailure
fingerprinthash forkafterauthentication forwardagent forwardx11 forwardx11timeout
forwardx11trusted gatewayports globalknownhostsfile gssapiauthentication
gssapidelegatecredentials hashknownhosts hostbasedacceptedalgorithms hostbasedauthentication
hostbasedkeytypes hostkeyalgorithms hostkeyalias hostname identitiesonly identityagent
identityfile ignoreunknown ipqos kbdinteractiveauthentication kbdinteractivedevices
kexalgorithms knownhostscommand localcommand localforward loglevel logverbose macs
nohostauthenticationforlocalhost numberofpasswordprompts obscurekeystroketiming
passwordauthentication permitlocalcommand permitremoteopen pkcs11provider port
preferredauthentications proxycommand proxyjump proxyusefdpass pubkeyacceptedalgorithms
pubkeyacceptedkeytypes pubkeyauthentication refuseconnection rekeylimit remotecommand
remoteforward requesttty requiredrsasize revokedhostkeys securitykeyprovider sendenv
serveralivecountmax serveraliveinterval sessiontype setenv stdinnull streamlocalbindmask
streamlocalbindunlink stricthostkeychecking syslogfacility tag tcpkeepalive tunnel tunneldevice
updatehostkeys user userknownhostsfile verifyhostkeydns visualhostkey warnweakcrypto
xauthlocation
gssapikeyexchange gssapiclientidentity gssapiserveridentity gssapirenewalforcesrekey
gssapitrustdns gssapikexalgorithms
challengeresponseauthentication dsaauthentication protocol cipher fallbacktorsh usersh
rsaauthentication rhostsrsaauthentication rhostsauthentication compressionlevel useroaming
useprivilegedport kerberosauthentication kerberostgtpassing afstokenpassing
globalknownhostsfile2 userknownhostsfile2 smartcarddevice useblacklistedkeys
""".split())

#: Options that accumulate instead of "first value wins".
MULTI = frozenset({"identityfile", "certificatefile", "localforward", "remoteforward",
                   "dynamicforward", "sendenv", "setenv", "permitremoteopen", "canonicaldomains"})

#: keyword -> (values that are fine, why it is refused otherwise). ``None`` = any value refused.
REFUSED: dict[str, tuple[Optional[frozenset[str]], str]] = {
    "canonicalizehostname": (frozenset({"no", "false", "none"}), "hostname canonicalization"),
    "certificatefile": (frozenset({"none"}), "user certificates from CertificateFile"),
    "pkcs11provider": (frozenset({"none"}), "PKCS#11 keys"),
    "knownhostscommand": (frozenset({"none"}), "KnownHostsCommand"),
    "proxyusefdpass": (frozenset({"no", "false"}), "ProxyUseFdpass"),
    "revokedhostkeys": (frozenset({"none"}), "RevokedHostKeys (a key revocation list)"),
    "bindinterface": (None, "BindInterface"),
}

_FLAG_VALUES = {"yes": True, "true": True, "no": False, "false": False}
_CHECKED_FLAGS = frozenset({"identitiesonly", "hashknownhosts", "compression", "batchmode",
                            "checkhostip", "proxyusefdpass", "tcpkeepalive",
                            "passwordauthentication", "kbdinteractiveauthentication",
                            "exitonforwardfailure", "clearallforwardings"})
_CHOICES = {
    "addressfamily": {"any", "inet", "inet6"},
    "canonicalizehostname": {"yes", "no", "true", "false", "always", "none"},
    "stricthostkeychecking": {"yes", "no", "true", "false", "ask", "accept-new", "off"},
}
_INT_OPTIONS = {"connecttimeout": (1, None), "serveraliveinterval": (0, None),
                "serveralivecountmax": (0, None), "connectionattempts": (1, None)}

REFUSE_HINT = "the paramiko transport cannot honour it; use --transport openssh"


def _local_user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - no passwd entry, no USER: fall back to the uid
        return str(os.getuid())


# ----------------------------------------------------------------------------- lexing
_KEYWORD = re.compile(r"([^\s=]+)\s*(?:=\s*)?(.*)$", re.DOTALL)


def split_args(text: str) -> list[str]:
    """OpenSSH ``argv_split`` (with comments): blanks separate, ``"`` and ``'`` quote,
    backslash escapes a quote, a backslash or (outside quotes) a blank; ``#`` at the start of
    an argument ends the line. Raises ValueError on an unterminated quote."""
    args: list[str] = []
    i, n = 0, len(text)
    while i < n:
        while i < n and text[i] in " \t\r\n":
            i += 1
        if i >= n:
            break
        if text[i] == "#":
            break
        buf: list[str] = []
        quote: Optional[str] = None
        while i < n:
            c = text[i]
            if quote is None and c in " \t\r\n":
                break
            if c == "\\" and i + 1 < n and (text[i + 1] in "'\"\\" or
                                             (quote is None and text[i + 1] == " ")):
                buf.append(text[i + 1])
                i += 2
                continue
            if quote is None and c in "'\"":
                quote = c
            elif quote is not None and c == quote:
                quote = None
            else:
                buf.append(c)
            i += 1
        if quote is not None:
            raise ValueError("unterminated quote")
        args.append("".join(buf))
    return args


@dataclass
class Line:
    path: str
    no: int
    key: str  # lowercased keyword
    args: list[str]
    name: str = ""  # the keyword as written
    #: for Include: [(file, lines of that file)], in order
    included: list[tuple[str, list["Line"]]] = field(default_factory=list)

    @property
    def where(self) -> str:
        return f"{self.path} line {self.no}"


# ----------------------------------------------------------------------------- ProxyJump
@dataclass(frozen=True)
class JumpHop:
    user: Optional[str]
    host: str
    port: Optional[int]

    def __str__(self) -> str:
        u = f"{self.user}@" if self.user else ""
        p = f":{self.port}" if self.port else ""
        return f"{u}{self.host}{p}"


def parse_jump(value: str) -> tuple[JumpHop, ...]:
    """``[ssh://][user@]host[:port],…`` (``none`` = no jump); ValueError when malformed."""
    if value.lower() == "none":
        return ()
    hops: list[JumpHop] = []
    for raw in value.split(","):
        hop = raw.strip()
        if hop.startswith("ssh://"):
            hop = hop[len("ssh://"):].rstrip("/")
        if not hop:
            raise ValueError("empty hop")
        user: Optional[str] = None
        if "@" in hop:
            user, _, hop = hop.rpartition("@")
            if not user:
                raise ValueError("empty user")
        port: Optional[int] = None
        if hop.startswith("["):
            end = hop.find("]")
            if end < 0:
                raise ValueError("unclosed [")
            host, rest = hop[1:end], hop[end + 1:]
            if rest:
                if not rest.startswith(":"):
                    raise ValueError("junk after ]")
                port = _port(rest[1:])
        elif hop.count(":") == 1:
            host, _, p = hop.partition(":")
            port = _port(p)
        else:
            host = hop
        if not host or host.startswith("-") or any(c in host for c in " \t'\"\\/@"):
            raise ValueError(f"bad host {host!r}")
        hops.append(JumpHop(user, host, port))
    return tuple(hops)


def _port(text: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise ValueError(f"bad port {text!r}")
    return int(text)


# ----------------------------------------------------------------------------- parsing
def _expand_env(text: str, where: str) -> str:
    def sub(m: re.Match[str]) -> str:
        name = m.group(1)
        if name not in os.environ:
            raise ConfigError(f"{where}: environment variable ${{{name}}} is not set")
        return os.environ[name]

    return re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", sub, text)


def _check_value(line: Line) -> None:
    """Syntax of the values clusterkit relies on (every block, like OpenSSH)."""
    key, args = line.key, line.args
    if key not in ("host", "match") and not args:
        raise ConfigError(f"ssh config {line.where}: {key} needs a value")
    if key == "host" and not args:
        raise ConfigError(f"ssh config {line.where}: Host needs a pattern")
    if key == "port":
        try:
            _port(args[0])
        except ValueError:
            raise ConfigError(f"ssh config {line.where}: bad Port {args[0]!r} "
                              "(a number 1-65535)") from None
    elif key == "proxyjump":
        try:
            parse_jump(args[0])
        except ValueError as e:
            raise ConfigError(f"ssh config {line.where}: invalid ProxyJump {args[0]!r} ({e})") \
                from None
    elif key in _CHECKED_FLAGS:
        if args[0].lower() not in _FLAG_VALUES:
            raise ConfigError(f"ssh config {line.where}: {key} must be yes or no, "
                              f"not {args[0]!r}")
    elif key in _CHOICES:
        if args[0].lower() not in _CHOICES[key]:
            raise ConfigError(f"ssh config {line.where}: bad {key} {args[0]!r} (one of "
                              f"{', '.join(sorted(_CHOICES[key]))})")
    elif key in _INT_OPTIONS:
        if args[0].lower() != "none" and not args[0].isdigit():
            raise ConfigError(f"ssh config {line.where}: {key} must be a number, "
                              f"not {args[0]!r}")


def read_config(path: str, *, user_conf: bool = True, depth: int = 0,
                required: bool = True) -> list[Line]:
    """The lines of ``path`` with every Include read in (recursively)."""
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except FileNotFoundError:
        if required:
            raise ConfigError(f"ssh config {path}: no such file") from None
        return []
    except OSError as e:
        raise ConfigError(f"ssh config {path}: cannot read it: {e.strerror or e}") from None
    if b"\x00" in data:
        raise ConfigError(f"ssh config {path}: not an ssh_config file (binary data)")
    return parse_config(data.decode("utf-8", "replace"), path, user_conf=user_conf, depth=depth)


#: Keywords whose value is the rest of the line as written (a command for a shell).
RAW = frozenset({"proxycommand", "localcommand", "remotecommand", "knownhostscommand"})


def parse_config(text: str, path: str = "<text>", *, user_conf: bool = True,
                 depth: int = 0) -> list[Line]:
    """The lines of one ssh_config text, Includes read in (relative to ~/.ssh or /etc/ssh)."""
    out: list[Line] = []
    for no, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        m = _KEYWORD.match(stripped)
        if m is None:  # pragma: no cover - the pattern matches any non-blank text
            continue
        key = m.group(1).lower()
        if key in RAW:
            args = [m.group(2).strip()] if m.group(2).strip() else []
        else:
            try:
                args = split_args(m.group(2))
            except ValueError as e:
                raise ConfigError(f"ssh config {path} line {no}: {e}") from None
        line = Line(path, no, key, args, m.group(1))
        _check_value(line)
        if key == "include":
            if depth + 1 > MAX_INCLUDE_DEPTH:
                raise ConfigError(f"ssh config {line.where}: Include nested deeper than "
                                  f"{MAX_INCLUDE_DEPTH} levels (does a file include itself?)")
            base = os.path.expanduser("~/.ssh") if user_conf else "/etc/ssh"
            for pattern in args:
                pat = _expand_env(os.path.expanduser(pattern), line.where)
                if not os.path.isabs(pat):
                    pat = os.path.join(base, pat)
                for inc in sorted(glob.glob(pat)):
                    if os.path.isdir(inc):
                        raise ConfigError(f"ssh config {line.where}: Include {inc} is a directory")
                    line.included.append((inc, read_config(inc, user_conf=user_conf,
                                                           depth=depth + 1)))
        out.append(line)
    return out


# ----------------------------------------------------------------------------- resolving
@dataclass
class _Ctx:
    host: str  # what Host patterns and Match host see
    original: str
    local_user: str
    final_pass: bool
    opts: dict[str, tuple[list[str], Line]] = field(default_factory=dict)
    multi: dict[str, list[tuple[list[str], Line]]] = field(default_factory=dict)
    refusals: list[str] = field(default_factory=list)
    want_final: bool = False


class SSHConfig:
    """ssh_config files read once; :meth:`lookup` resolves one host (call it from any thread:
    nothing is mutated after reading)."""

    def __init__(self, files: Sequence[tuple[str, bool]] = ()) -> None:
        """``files``: ``(path, required)`` in the order OpenSSH reads them."""
        self.files = [p for p, _ in files]
        self.lines: list[Line] = []
        for path, required in files:
            system = os.path.abspath(path).startswith("/etc/ssh/")
            self.lines.extend(read_config(path, user_conf=not system, required=required))

    @classmethod
    def from_text(cls, text: str, path: str = "<text>", *, user_conf: bool = True) -> SSHConfig:
        """Parse ``text`` as if it were the file ``path`` (its Includes are read)."""
        cfg = cls()
        cfg.files = [path]
        cfg.lines = parse_config(text, path, user_conf=user_conf)
        return cfg

    # -- one host --------------------------------------------------------------------------
    def lookup(self, host: str, *, user: Optional[str] = None, port: Optional[int] = None,
               local_user: Optional[str] = None) -> Resolved:
        """The options for ``host``; ``user``/``port`` act like ``ssh -l``/``-p`` (they win)."""
        ctx = _Ctx(host=host, original=host, local_user=local_user or _local_user(),
                   final_pass=False)
        dummy = Line("<command line>", 0, "", [])
        if user:
            ctx.opts["user"] = ([user], dummy)
        if port:
            ctx.opts["port"] = ([str(port)], dummy)
        self._walk(self.lines, ctx, active=True, never=False)
        if ctx.want_final:
            hostname = _expand_hostname(ctx.opts.get("hostname", ([host], dummy))[0][0], host)
            ctx.host = hostname
            ctx.final_pass = True
            self._walk(self.lines, ctx, active=True, never=False)
        return Resolved(host, ctx.opts, ctx.multi, ctx.refusals, ctx.local_user)

    def _walk(self, lines: list[Line], ctx: _Ctx, *, active: bool, never: bool) -> bool:
        for line in lines:
            key = line.key
            if key == "host":
                active = (not never) and self._host_matches(ctx.host, line.args)
                continue
            if key == "match":
                matched = self._match(line, ctx, never)
                active = (not never) and matched
                continue
            if key == "include":
                outer = active
                for _, sub in line.included:
                    self._walk(sub, ctx, active=active, never=never or not outer)
                active = outer
                continue
            if key not in KNOWN:
                ignore = ctx.opts.get("ignoreunknown")
                if ignore and match_pattern_list(key, ignore[0][0].split(",")) is True:
                    continue
                raise ConfigError(f"ssh config {line.where}: bad configuration option "
                                  f"{line.name or key!r}")
            if not active:
                continue
            if key in REFUSED:
                fine, what = REFUSED[key]
                if fine is None or line.args[0].lower() not in fine:
                    msg = (f"ssh config {line.where}: {what} ({_orig_keyword(line)} "
                           f"{' '.join(line.args)}) applies to {ctx.original}; {REFUSE_HINT}")
                    if msg not in ctx.refusals:
                        ctx.refusals.append(msg)
            if key in MULTI:
                ctx.multi.setdefault(key, []).append((line.args, line))
            elif key in ("proxyjump", "proxycommand"):
                # the two exclude each other: whichever comes first wins
                if "proxyjump" not in ctx.opts and "proxycommand" not in ctx.opts:
                    ctx.opts[key] = (line.args, line)
            elif key not in ctx.opts:
                ctx.opts[key] = (line.args, line)
        return active

    @staticmethod
    def _host_matches(host: str, patterns: list[str]) -> bool:
        return match_pattern_list(host, patterns) is True

    def _match(self, line: Line, ctx: _Ctx, never: bool) -> bool:
        args = list(line.args)
        if not args:
            raise ConfigError(f"ssh config {line.where}: Match needs a criterion")
        result = True
        i = 0
        saw_all = False
        while i < len(args):
            attr = args[i]
            i += 1
            negate = attr.startswith("!")
            name = attr[1:].lower() if negate else attr.lower()
            if name in ("all", "canonical", "final"):
                if name == "all":
                    saw_all = True
                    ok = True
                else:
                    if name == "final":
                        ctx.want_final = True
                    ok = ctx.final_pass
            else:
                if i >= len(args):
                    raise ConfigError(f"ssh config {line.where}: Match {attr} needs an argument")
                value = args[i]
                i += 1
                if name in ("exec", "localnetwork", "version", "sessiontype", "command"):
                    if result and not never:
                        msg = (f"ssh config {line.where}: Match {name} {value!r} applies to "
                               f"{ctx.original}; {REFUSE_HINT}")
                        if msg not in ctx.refusals:
                            ctx.refusals.append(msg)
                    ok = False
                elif name == "host":
                    cur = ctx.opts.get("hostname")
                    h = _expand_hostname(cur[0][0], ctx.host) if cur else ctx.host
                    ok = match_pattern_list(h, value.split(",")) is True
                elif name == "originalhost":
                    ok = match_pattern_list(ctx.original, value.split(",")) is True
                elif name == "user":
                    cur = ctx.opts.get("user")
                    u = cur[0][0] if cur else ctx.local_user
                    ok = match_pattern_list(u, value.split(",")) is True
                elif name == "localuser":
                    ok = match_pattern_list(ctx.local_user, value.split(",")) is True
                elif name == "tagged":
                    cur = ctx.opts.get("tag")
                    tag = cur[0][0] if cur else ""
                    ok = (match_pattern_list(tag, value.split(",")) is True) if tag else \
                        value in ("", '""')
                else:
                    raise ConfigError(f"ssh config {line.where}: unsupported Match "
                                      f"criterion {attr!r}")
            if negate:
                ok = not ok
            if not ok:
                result = False
        if saw_all and len([a for a in args if a.lstrip("!").lower()
                            not in ("canonical", "final")]) > 1:
            raise ConfigError(f"ssh config {line.where}: Match all cannot be combined")
        return result


def _orig_keyword(line: Line) -> str:
    names = {"canonicalizehostname": "CanonicalizeHostname", "certificatefile": "CertificateFile",
             "pkcs11provider": "PKCS11Provider", "knownhostscommand": "KnownHostsCommand",
             "proxyusefdpass": "ProxyUseFdpass", "revokedhostkeys": "RevokedHostKeys",
             "bindinterface": "BindInterface"}
    return names.get(line.key, line.key)


def _expand_hostname(value: str, original: str) -> str:
    out = []
    i = 0
    while i < len(value):
        c = value[i]
        if c == "%" and i + 1 < len(value):
            t = value[i + 1]
            out.append(original if t == "h" else "%" if t == "%" else c + t)
            i += 2
            continue
        out.append(c)
        i += 1
    return "".join(out)


# ----------------------------------------------------------------------------- results
@dataclass
class Resolved:
    """The options one host gets: ``get`` the first value, ``all`` for accumulating options."""

    host: str
    opts: dict[str, tuple[list[str], Line]]
    multi: dict[str, list[tuple[list[str], Line]]]
    refusals: list[str]
    local_user: str

    def get(self, key: str, default: Optional[str] = None) -> Optional[str]:
        got = self.opts.get(key)
        return got[0][0] if got else default

    def args(self, key: str) -> Optional[list[str]]:
        got = self.opts.get(key)
        return list(got[0]) if got else None

    def where(self, key: str) -> str:
        got = self.opts.get(key)
        if got is None and self.multi.get(key):
            got = self.multi[key][0]
        return got[1].where if got else "ssh config"

    def all(self, key: str) -> list[tuple[list[str], Line]]:
        return list(self.multi.get(key, []))

    def flag(self, key: str, default: bool = False) -> bool:
        v = self.get(key)
        return _FLAG_VALUES.get(v.lower(), default) if v is not None else default


@dataclass(frozen=True)
class HostConfig:
    """Everything the paramiko transport needs to reach one host (one hop of a route)."""

    alias: str  # the name looked up in ssh_config (the node's address or a jump hop)
    hostname: str
    port: int
    user: str
    identity_files: tuple[str, ...]  # IdentityFile lines for this host, expanded, in order
    identity_where: tuple[str, ...]  # where each came from ("FILE line N")
    identities_only: bool
    proxy_jump: tuple[JumpHop, ...]
    proxy_command: Optional[str]
    user_known_hosts: tuple[str, ...]
    global_known_hosts: tuple[str, ...]
    host_key_alias: Optional[str]
    hash_known_hosts: bool
    compression: bool
    address_family: int
    bind_address: Optional[str]
    identity_agent: Optional[str]  # a socket path; "" = no agent; None = $SSH_AUTH_SOCK
    algorithms: tuple[tuple[str, str], ...]  # (kexalgorithms|ciphers|macs|…, value)
    set_env: tuple[tuple[str, str], ...]
    send_env: tuple[str, ...]
    refusals: tuple[str, ...]


class TokenError(ValueError):
    pass


def expand_tokens(value: str, tokens: dict[str, str]) -> str:
    out: list[str] = []
    i = 0
    while i < len(value):
        c = value[i]
        if c == "%":
            if i + 1 >= len(value):
                raise TokenError("'%' at the end")
            t = value[i + 1]
            if t not in tokens:
                raise TokenError(f"unknown token %{t}")
            out.append(tokens[t])
            i += 2
            continue
        out.append(c)
        i += 1
    return "".join(out)


def _home() -> str:
    return os.path.expanduser("~")


def host_config(resolved: Resolved) -> HostConfig:
    """Turn resolved options into a HostConfig; ConfigError for a value that cannot be used."""
    r = resolved
    original = r.host
    hostname = _expand_hostname(r.get("hostname", original) or original, original)
    port = int(r.get("port", "22") or 22)
    user = r.get("user") or r.local_user
    local_host = socket.gethostname()
    jump_value = r.get("proxyjump")
    try:
        jumps = parse_jump(jump_value) if jump_value else ()
    except ValueError as e:  # checked when read; kept for HostConfig built from other input
        raise ConfigError(f"ssh config {r.where('proxyjump')}: invalid ProxyJump "
                          f"{jump_value!r} ({e})") from None
    alias = r.get("hostkeyalias")
    tokens = {
        "%": "%", "h": hostname, "p": str(port), "r": user, "u": r.local_user, "d": _home(),
        "n": original, "l": local_host, "L": local_host.split(".")[0], "i": str(os.getuid()),
        "k": alias or original, "j": jump_value or "",
    }
    tokens["C"] = hashlib.sha1(f"{local_host}{hostname}{port}{user}{tokens['j']}".encode()
                               ).hexdigest()

    def path_value(value: str, where: str) -> str:
        try:
            v = expand_tokens(value, tokens)
        except TokenError as e:
            raise ConfigError(f"ssh config {where}: {e} in {value!r}") from None
        return _expand_env(os.path.expanduser(v), where)

    identities: list[str] = []
    where: list[str] = []
    for args, line in r.all("identityfile"):
        if args[0].lower() == "none":
            continue
        p = os.path.abspath(path_value(args[0], line.where))  # relative: to the cwd, as ssh
        if p not in identities:
            identities.append(p)
            where.append(line.where)

    def files(key: str, default: list[str]) -> tuple[str, ...]:
        args = r.args(key)
        if args is None:
            args = default
        out = []
        for a in args:
            if a.lower() == "none":
                continue
            out.append(path_value(a, r.where(key)))
        return tuple(out)

    proxy_command = None
    pc = r.args("proxycommand")
    if pc is not None:
        raw = pc[0]
        if raw.lower() != "none":
            try:
                proxy_command = expand_tokens(raw, {"%": "%", "h": hostname, "p": str(port),
                                                    "r": user, "n": original,
                                                    "k": alias or original})
            except TokenError as e:
                raise ConfigError(f"ssh config {r.where('proxycommand')}: {e} in "
                                  f"ProxyCommand") from None

    fam = (r.get("addressfamily") or "any").lower()
    family = {"inet": socket.AF_INET, "inet6": socket.AF_INET6}.get(fam, socket.AF_UNSPEC)

    agent_value = r.get("identityagent")
    agent: Optional[str] = None
    if agent_value is not None:
        if agent_value.lower() == "none":
            agent = ""
        elif agent_value == "SSH_AUTH_SOCK":
            agent = None
        elif agent_value.startswith("$"):
            agent = os.environ.get(agent_value[1:].strip("{}"), "")
        else:
            agent = path_value(agent_value, r.where("identityagent"))

    algorithms = tuple((k, r.get(k) or "") for k in ("kexalgorithms", "ciphers", "macs",
                                                     "hostkeyalgorithms",
                                                     "pubkeyacceptedalgorithms",
                                                     "pubkeyacceptedkeytypes")
                       if r.get(k))
    set_env: list[tuple[str, str]] = []
    for args, _line in r.all("setenv"):
        for a in args:
            name, eq, value = a.partition("=")
            if eq and name and name not in {n for n, _ in set_env}:
                set_env.append((name, value))
    send_env = tuple(a for args, _ in r.all("sendenv") for a in args)

    return HostConfig(
        alias=original, hostname=hostname, port=port, user=user,
        identity_files=tuple(identities), identity_where=tuple(where),
        identities_only=r.flag("identitiesonly"), proxy_jump=jumps,
        proxy_command=proxy_command,
        user_known_hosts=files("userknownhostsfile", ["~/.ssh/known_hosts",
                                                      "~/.ssh/known_hosts2"]),
        global_known_hosts=files("globalknownhostsfile", ["/etc/ssh/ssh_known_hosts",
                                                          "/etc/ssh/ssh_known_hosts2"]),
        host_key_alias=alias, hash_known_hosts=r.flag("hashknownhosts"),
        compression=r.flag("compression"), address_family=family,
        bind_address=r.get("bindaddress"), identity_agent=agent, algorithms=algorithms,
        set_env=tuple(set_env), send_env=send_env, refusals=tuple(r.refusals),
    )


def algorithm_list(value: str, defaults: Sequence[str]) -> list[str]:
    """An OpenSSH algorithm list applied to ``defaults``: ``+a,b`` appends (and keeps the
    defaults), ``-a,b*`` removes (patterns), ``^a,b`` puts first, else exactly these (patterns
    allowed), in the given order."""
    value = value.strip()
    if not value:
        return list(defaults)
    op, body = (value[0], value[1:]) if value[0] in "+-^" else ("", value)
    names = [x for x in body.split(",") if x]
    if op == "+":
        return list(defaults) + [n for n in names if n not in defaults]
    if op == "-":
        return [d for d in defaults if not any(match_pattern(d, n) for n in names)]
    if op == "^":
        first = [d for n in names for d in defaults if match_pattern(d, n)]
        return first + [d for d in defaults if d not in first]
    out: list[str] = []
    for n in names:
        for d in defaults:
            if match_pattern(d, n) and d not in out:
                out.append(d)
        if not any(c in n for c in "*?") and n not in out and n not in defaults:
            out.append(n)
    return out


__all__ = ["HostConfig", "JumpHop", "KNOWN", "Line", "REFUSED", "Resolved", "SSHConfig",
           "algorithm_list", "expand_tokens", "host_config", "parse_jump", "read_config",
           "split_args"]
