"""OpenSSH known_hosts files: a small, pure parser and matcher (no network, no paramiko).

One line is ``[@marker] hosts keytype base64-key [comment]``:

- ``hosts`` is a comma-separated list of patterns (``*`` and ``?`` wildcards, ``!`` negation:
  a line whose negated pattern matches never applies), names are compared case-insensitively,
  and a non-standard port is written ``[host]:port``; or one hashed name ``|1|salt|hmac``
  (base64 salt, base64 HMAC-SHA1 of the name keyed by the salt — what ``ssh-keygen -H`` writes).
- ``@revoked``: the key is never accepted for the matching hosts (even if listed elsewhere).
- ``@cert-authority``: the key is a CA that signs host certificates for the matching hosts.
- blank lines and ``#`` comments are skipped; so is a malformed line (bad base64, a key whose
  blob does not name its type, missing fields), as OpenSSH does. A file that cannot be read, or
  that is not text at all (binary data, or not one readable line among its content lines), is a
  :class:`KnownHostsError` (a ConfigError: exit 2 before any node is contacted). A missing file
  is empty, as for OpenSSH.

:class:`KnownHosts` is one view over several files (UserKnownHostsFile + GlobalKnownHostsFile);
:class:`KnownHostsCache` reads each file once and shares it between threads; :meth:`KnownHosts.add`
records a newly accepted key (``--accept-new-hostkeys``) in the first user file, hashed when
``HashKnownHosts`` asks for it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
import struct
import threading
from dataclasses import dataclass, field
from typing import Iterable, Optional, Sequence

from clusterkit.errors import ConfigError

REVOKED = "revoked"
CERT_AUTHORITY = "cert-authority"
_MARKERS = {"@revoked": REVOKED, "@cert-authority": CERT_AUTHORITY}
HASH_MAGIC = "|1|"


class KnownHostsError(ConfigError):
    """A known_hosts file that cannot be used at all (unreadable, binary)."""


# ----------------------------------------------------------------------------- matching
_PATTERN_CACHE: dict[str, re.Pattern[str]] = {}


def match_pattern(name: str, pattern: str) -> bool:
    """OpenSSH ``match_pattern``: ``*`` any run of characters, ``?`` one; case-insensitive.

    Nothing else is special (no ``[…]`` classes as in fnmatch).
    """
    rx = _PATTERN_CACHE.get(pattern)
    if rx is None:
        parts = [".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern.lower()]
        rx = re.compile("".join(parts), re.DOTALL)
        if len(_PATTERN_CACHE) < 4096:
            _PATTERN_CACHE[pattern] = rx
    return rx.fullmatch(name.lower()) is not None


def match_pattern_list(name: str, patterns: Iterable[str]) -> Optional[bool]:
    """OpenSSH ``match_pattern_list``: True when a positive pattern matches and no negated one
    does; False when a negated pattern matches (the list *refuses* the name); None when nothing
    matched at all."""
    found = False
    for pat in patterns:
        if not pat:
            continue
        if pat.startswith("!"):
            if match_pattern(name, pat[1:]):
                return False
        elif match_pattern(name, pat):
            found = True
    return True if found else None


def hash_hostname(name: str, salt: Optional[bytes] = None) -> str:
    """The ``|1|salt|hash`` form of ``name`` (HMAC-SHA1 keyed by a 20-byte salt)."""
    salt = os.urandom(20) if salt is None else salt
    digest = hmac.new(salt, name.encode(), hashlib.sha1).digest()
    return f"{HASH_MAGIC}{base64.b64encode(salt).decode()}|{base64.b64encode(digest).decode()}"


def lookup_name(hostname: str, port: int, alias: Optional[str] = None) -> str:
    """The name OpenSSH looks up: the HostKeyAlias as it is, else ``host`` on port 22 and
    ``[host]:port`` on any other port."""
    if alias:
        return alias
    return hostname if int(port) == 22 else f"[{hostname}]:{int(port)}"


def key_type_of(blob: bytes) -> Optional[str]:
    """The type string a public key blob starts with (``ssh-ed25519`` …), or None."""
    if len(blob) < 4:
        return None
    (n,) = struct.unpack(">I", blob[:4])
    if n == 0 or n > 64 or len(blob) < 4 + n:
        return None
    try:
        return blob[4:4 + n].decode("ascii")
    except UnicodeDecodeError:
        return None


def fingerprint(blob: bytes) -> str:
    """``SHA256:…`` as ``ssh-keygen -l`` prints it."""
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


# ----------------------------------------------------------------------------- entries
@dataclass(frozen=True)
class Entry:
    """One usable line of a known_hosts file."""

    path: str
    line_no: int
    marker: Optional[str]  # None, REVOKED or CERT_AUTHORITY
    patterns: tuple[str, ...]  # the comma list (empty for a hashed entry)
    hashed: Optional[tuple[bytes, bytes]]  # (salt, HMAC-SHA1) of a |1| entry
    key_type: str
    blob: bytes

    @property
    def where(self) -> str:
        return f"{self.path}:{self.line_no}"

    def matches(self, name: str) -> bool:
        if self.hashed is not None:
            salt, digest = self.hashed
            for candidate in {name, name.lower()}:
                mac = hmac.new(salt, candidate.encode(), hashlib.sha1).digest()
                if hmac.compare_digest(mac, digest):
                    return True
            return False
        return match_pattern_list(name, self.patterns) is True


def _parse_hashed(field_: str) -> Optional[tuple[bytes, bytes]]:
    parts = field_[len(HASH_MAGIC):].split("|")
    if len(parts) != 2:
        return None
    try:
        salt = base64.b64decode(parts[0], validate=True)
        digest = base64.b64decode(parts[1], validate=True)
    except (binascii.Error, ValueError):
        return None
    if len(digest) != 20 or not salt:
        return None
    return salt, digest


def parse_line(line: str, path: str = "<text>", line_no: int = 0) -> Optional[Entry]:
    """One known_hosts line as an Entry; None for a blank line, a comment or a malformed line."""
    text = line.strip()
    if not text or text.startswith("#"):
        return None
    fields = text.split()
    marker = None
    if fields[0].startswith("@"):
        marker = _MARKERS.get(fields[0].lower())
        if marker is None:
            return None  # unknown marker: OpenSSH skips the line
        fields = fields[1:]
    if len(fields) < 3:
        return None
    hosts, key_type, b64 = fields[0], fields[1], fields[2]
    try:
        blob = base64.b64decode(b64, validate=True)
    except (binascii.Error, ValueError):
        return None
    if key_type_of(blob) != key_type:
        return None
    if hosts.startswith(HASH_MAGIC):
        hashed = _parse_hashed(hosts)
        if hashed is None:
            return None
        return Entry(path, line_no, marker, (), hashed, key_type, blob)
    patterns = tuple(p for p in hosts.split(",") if p)
    if not patterns:
        return None
    return Entry(path, line_no, marker, patterns, None, key_type, blob)


@dataclass
class KnownHostsFile:
    """One file's usable entries, plus the line numbers it skipped as malformed."""

    path: str
    entries: list[Entry] = field(default_factory=list)
    skipped: list[int] = field(default_factory=list)
    exists: bool = True
    #: (plain name -> entries listing it, every other entry: wildcards, negations, hashed),
    #: rebuilt whole and swapped in one assignment (readers never see half of it)
    _index: Optional[tuple[dict[str, list[Entry]], list[Entry], int]] = field(default=None,
                                                                              repr=False)

    def matching(self, name: str) -> list[Entry]:
        """The entries whose hosts match ``name``, in file order."""
        index = self._index
        if index is None or index[2] != len(self.entries):
            index = self.reindex()
        by_name, others, _ = index
        got = list(by_name.get(name.lower(), ()))
        got += [e for e in others if e.matches(name)]
        if len(got) > 1:
            got.sort(key=lambda e: e.line_no)
        return got

    def reindex(self) -> tuple[dict[str, list[Entry]], list[Entry], int]:
        entries = list(self.entries)
        by_name: dict[str, list[Entry]] = {}
        others: list[Entry] = []
        for e in entries:
            if e.hashed is None and not any(c in p for p in e.patterns for c in "*?!"):
                for p in {p.lower() for p in e.patterns}:
                    by_name.setdefault(p, []).append(e)
            else:
                others.append(e)
        self._index = (by_name, others, len(entries))
        return self._index

    @classmethod
    def parse(cls, text: str, path: str = "<text>") -> KnownHostsFile:
        out = cls(path)
        for no, line in enumerate(text.splitlines(), 1):
            entry = parse_line(line, path, no)
            if entry is not None:
                out.entries.append(entry)
            elif line.strip() and not line.strip().startswith("#"):
                out.skipped.append(no)
        return out

    @classmethod
    def load(cls, path: str) -> KnownHostsFile:
        """Read ``path``: missing = empty; unreadable or not text = KnownHostsError."""
        try:
            with open(path, "rb") as fh:
                data = fh.read()
        except FileNotFoundError:
            return cls(path, exists=False)
        except OSError as e:
            raise KnownHostsError(f"known_hosts {path}: cannot read it: "
                                  f"{e.strerror or e}") from None
        if b"\x00" in data:
            raise KnownHostsError(f"known_hosts {path}: not a known_hosts file (binary data)")
        out = cls.parse(data.decode("utf-8", "replace"), path)
        if out.skipped and not out.entries:
            raise KnownHostsError(
                f"known_hosts {path}: not a known_hosts file (none of its {len(out.skipped)} "
                f"lines is 'hosts keytype key', e.g. line {out.skipped[0]})")
        return out


# ----------------------------------------------------------------------------- lookups
@dataclass
class HostKeys:
    """What the known_hosts files say about one lookup name."""

    name: str
    keys: list[Entry] = field(default_factory=list)  # plain keys
    revoked: list[Entry] = field(default_factory=list)
    authorities: list[Entry] = field(default_factory=list)

    @property
    def known(self) -> bool:
        return bool(self.keys)

    def key_types(self) -> list[str]:
        """Types of the plain keys not revoked, in file order, each once."""
        out: list[str] = []
        for e in self.keys:
            if e.key_type not in out and not self.is_revoked(e.blob):
                out.append(e.key_type)
        return out

    def is_revoked(self, blob: bytes) -> Optional[Entry]:
        for e in self.revoked:
            if e.blob == blob:
                return e
        return None

    def check(self, blob: bytes) -> tuple[str, Optional[Entry]]:
        """``(verdict, entry)`` for a server key blob; verdict one of ``ok`` (entry = the line
        that lists it), ``revoked``, ``changed`` (entry = a line listing another key),
        ``cert-authority`` (no plain key, but a CA line: certificates are needed), ``unknown``."""
        rev = self.is_revoked(blob)
        if rev is not None:
            return "revoked", rev
        for e in self.keys:
            if e.blob == blob:
                return "ok", e
        if self.keys:
            same_type = [e for e in self.keys if e.key_type == key_type_of(blob)]
            return "changed", (same_type or self.keys)[0]
        if self.authorities:
            return "cert-authority", self.authorities[0]
        return "unknown", None


class KnownHostsCache:
    """Every known_hosts file read at most once, shared by all threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._files: dict[str, KnownHostsFile] = {}

    def file(self, path: str) -> KnownHostsFile:
        with self._lock:
            got = self._files.get(path)
            if got is None:
                got = self._files[path] = KnownHostsFile.load(path)
            return got

    def view(self, paths: Sequence[str], record_to: Optional[str] = None,
             hash_names: bool = False) -> KnownHosts:
        return KnownHosts(self, tuple(paths), record_to, hash_names)


class KnownHosts:
    """Several known_hosts files seen as one (user files, then global files)."""

    def __init__(self, cache: KnownHostsCache, paths: tuple[str, ...],
                 record_to: Optional[str] = None, hash_names: bool = False) -> None:
        self._cache = cache
        self.paths = paths
        self.record_to = record_to
        self.hash_names = hash_names

    def load(self) -> None:
        """Read every file now (KnownHostsError for one that cannot be used)."""
        for p in self.paths:
            self._cache.file(p)

    def lookup(self, name: str) -> HostKeys:
        out = HostKeys(name)
        for p in self.paths:
            for e in self._cache.file(p).matching(name):
                if e.marker == REVOKED:
                    out.revoked.append(e)
                elif e.marker == CERT_AUTHORITY:
                    out.authorities.append(e)
                else:
                    out.keys.append(e)
        return out

    def add(self, name: str, key_type: str, blob: bytes) -> Optional[str]:
        """Record a newly accepted key: in memory, and appended to ``record_to`` (returns it)."""
        host_field = hash_hostname(name) if self.hash_names else name
        line = f"{host_field} {key_type} {base64.b64encode(blob).decode()}"
        target = self.record_to
        with self._cache._lock:  # one writer at a time, and lookups see a whole entry
            if target:
                d = os.path.dirname(os.path.abspath(target))
                os.makedirs(d, mode=0o700, exist_ok=True)
                prefix = ""
                try:
                    with open(target, "rb") as fh:
                        fh.seek(0, os.SEEK_END)
                        if fh.tell() > 0:
                            fh.seek(-1, os.SEEK_END)
                            prefix = "" if fh.read(1) == b"\n" else "\n"
                except FileNotFoundError:
                    pass
                with open(target, "a", encoding="utf-8") as fh:
                    fh.write(prefix + line + "\n")
            key_file = target or (self.paths[0] if self.paths else "<memory>")
            f = self._cache._files.get(key_file)
            if f is None:
                f = self._cache._files[key_file] = KnownHostsFile(key_file, exists=False)
                if target:  # never read before: read it whole (the new line included)
                    f = self._cache._files[key_file] = KnownHostsFile.load(target)
                    return target
            entry = parse_line(line, key_file, len(f.entries) + len(f.skipped) + 1)
            if entry is not None:
                f.entries.append(entry)
        return target


__all__ = [
    "CERT_AUTHORITY", "Entry", "HostKeys", "KnownHosts", "KnownHostsCache", "KnownHostsError",
    "KnownHostsFile", "REVOKED", "fingerprint", "hash_hostname", "key_type_of", "lookup_name",
    "match_pattern", "match_pattern_list", "parse_line",
]
