"""known_hosts parsing and matching (clusterkit.transport.knownhosts) on hand-written files.

Keys are real (generated with cryptography); hashed names are computed here with hmac, and,
where ssh-keygen is installed, checked against what OpenSSH itself writes and prints.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import shutil
import subprocess
import threading
from pathlib import Path

import pytest

from clusterkit.errors import ConfigError
from clusterkit.transport.knownhosts import (
    KnownHostsCache,
    KnownHostsError,
    KnownHostsFile,
    fingerprint,
    key_type_of,
    lookup_name,
    match_pattern,
    match_pattern_list,
    parse_line,
)


def _public(kind: str) -> tuple[str, bytes]:
    """('TYPE BASE64', blob) of a fresh public key."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

    if kind == "ed25519":
        key = ed25519.Ed25519PrivateKey.generate()
    elif kind == "ecdsa":
        key = ec.generate_private_key(ec.SECP256R1())
    else:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    line = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                         serialization.PublicFormat.OpenSSH).decode()
    return line, base64.b64decode(line.split()[1])


@pytest.fixture(scope="module")
def keys() -> dict[str, tuple[str, bytes]]:
    return {"ed": _public("ed25519"), "ed2": _public("ed25519"), "ec": _public("ecdsa"),
            "rsa": _public("rsa"), "ca": _public("ed25519")}


def hashed(name: str, salt: bytes = b"0123456789abcdefghij") -> str:
    mac = hmac.new(salt, name.encode(), hashlib.sha1).digest()
    return f"|1|{base64.b64encode(salt).decode()}|{base64.b64encode(mac).decode()}"


def view(tmp_path: Path, text: str, name: str = "known_hosts"):
    path = tmp_path / name
    path.write_text(text)
    return KnownHostsCache().view([str(path)], record_to=str(path))


# ----------------------------------------------------------------------------- patterns
@pytest.mark.parametrize("name, pattern, ok", [
    ("gpu-001", "gpu-001", True), ("GPU-001", "gpu-001", True), ("gpu-001", "GPU-*", True),
    ("gpu-001", "gpu-00?", True), ("gpu-0011", "gpu-00?", False), ("gpu-001", "*", True),
    ("gpu-001", "gpu", False), ("a.b", "a?b", True), ("[x]:22", "[x]:22", True),
    ("x1", "x[0-9]", False),  # no character classes: '[' is literal, unlike fnmatch
])
def test_match_pattern(name, pattern, ok):
    assert match_pattern(name, pattern) is ok


def test_pattern_list_negation_wins():
    assert match_pattern_list("gpu-001", ["gpu-*", "!gpu-001"]) is False
    assert match_pattern_list("gpu-002", ["gpu-*", "!gpu-001"]) is True
    assert match_pattern_list("cpu-002", ["gpu-*", "!gpu-001"]) is None
    assert match_pattern_list("gpu-001", ["!gpu-001"]) is False


def test_lookup_names():
    assert lookup_name("gpu-001", 22) == "gpu-001"
    assert lookup_name("10.0.0.1", 2222) == "[10.0.0.1]:2222"
    assert lookup_name("10.0.0.1", 2222, "gpu-001-key") == "gpu-001-key"


# ----------------------------------------------------------------------------- lines
def test_plain_comma_list_comments_and_blank_lines(tmp_path, keys):
    ed, ec = keys["ed"], keys["ec"]
    kh = view(tmp_path, f"# a comment\n\n   \ngpu-001,10.0.0.1 {ed[0]} root@gpu-001\n"
                        f"gpu-002 {ec[0]}\n")
    assert [e.blob for e in kh.lookup("gpu-001").keys] == [ed[1]]
    assert [e.blob for e in kh.lookup("10.0.0.1").keys] == [ed[1]]
    assert [e.key_type for e in kh.lookup("gpu-002").keys] == ["ecdsa-sha2-nistp256"]
    assert kh.lookup("gpu-003").keys == []
    entry = kh.lookup("gpu-001").keys[0]
    assert entry.line_no == 4 and entry.where.endswith("known_hosts:4")


def test_port_entries(tmp_path, keys):
    ed, ec = keys["ed"], keys["ec"]
    kh = view(tmp_path, f"[gpu-001]:2222,[10.0.0.1]:2222 {ed[0]}\ngpu-001 {ec[0]}\n")
    assert [e.blob for e in kh.lookup(lookup_name("gpu-001", 2222)).keys] == [ed[1]]
    assert [e.blob for e in kh.lookup(lookup_name("10.0.0.1", 2222)).keys] == [ed[1]]
    assert [e.blob for e in kh.lookup(lookup_name("gpu-001", 22)).keys] == [ec[1]]
    assert kh.lookup(lookup_name("gpu-001", 2200)).keys == []


def test_hashed_entries(tmp_path, keys):
    ed, ec = keys["ed"], keys["ec"]
    kh = view(tmp_path, f"{hashed('gpu-001')} {ed[0]}\n"
                        f"{hashed('[10.0.0.2]:2222', salt=os.urandom(20))} {ec[0]}\n")
    assert [e.blob for e in kh.lookup("gpu-001").keys] == [ed[1]]
    assert [e.blob for e in kh.lookup("GPU-001").keys] == [ed[1]]  # names compare lowercased
    assert [e.blob for e in kh.lookup("[10.0.0.2]:2222").keys] == [ec[1]]
    assert kh.lookup("gpu-002").keys == [] and kh.lookup("10.0.0.2").keys == []


def test_wildcards_and_negation(tmp_path, keys):
    ed, ec = keys["ed"], keys["ec"]
    kh = view(tmp_path, f"gpu-*.rack1,!gpu-013.rack1 {ed[0]}\ngpu-01? {ec[0]}\n")
    assert [e.blob for e in kh.lookup("gpu-001.rack1").keys] == [ed[1]]
    assert kh.lookup("gpu-013.rack1").keys == []
    assert [e.blob for e in kh.lookup("gpu-012").keys] == [ec[1]]
    assert kh.lookup("gpu-0123").keys == []


@pytest.mark.parametrize("line", [
    "gpu-001 ssh-ed25519",  # no key
    "gpu-001 ssh-ed25519 not*base64",
    "gpu-001 ssh-rsa {ed}",  # the blob says ed25519
    "@bogus gpu-001 ssh-ed25519 {ed}",  # unknown marker
    "|1|bad|hash ssh-ed25519 {ed}",
    "|1|{salt}|{short} ssh-ed25519 {ed}",  # a hash that is not 20 bytes
    ", ssh-ed25519 {ed}",
])
def test_malformed_lines_are_skipped(tmp_path, keys, line):
    ed_b64 = keys["ed"][0].split()[1]
    line = line.format(ed=ed_b64, salt=base64.b64encode(b"s" * 20).decode(),
                       short=base64.b64encode(b"x" * 5).decode())
    assert parse_line(line) is None
    f = KnownHostsFile.parse(f"{line}\ngpu-002 {keys['ec'][0]}\n", "kh")
    assert f.skipped == [1] and [e.line_no for e in f.entries] == [2]


# ----------------------------------------------------------------------------- markers
def test_revoked_key_is_refused_even_when_listed(tmp_path, keys):
    ed, ec = keys["ed"], keys["ec"]
    kh = view(tmp_path, f"gpu-001 {ed[0]}\ngpu-001 {ec[0]}\n@revoked * {ed[0]}\n")
    got = kh.lookup("gpu-001")
    assert got.check(ed[1])[0] == "revoked"
    assert got.check(ec[1])[0] == "ok"
    assert got.key_types() == ["ecdsa-sha2-nistp256"]  # a revoked key is not offered


def test_cert_authority_only_applies_to_its_hosts(tmp_path, keys):
    ed, ca = keys["ed"], keys["ca"]
    kh = view(tmp_path, f"@cert-authority *.certs,10.9.* {ca[0]}\ngpu-001 {ed[0]}\n")
    verdict, entry = kh.lookup("node1.certs").check(ed[1])
    assert verdict == "cert-authority" and entry is not None and entry.line_no == 1
    assert kh.lookup("gpu-001").check(ed[1])[0] == "ok"  # the CA line breaks nothing else
    assert kh.lookup("gpu-002").check(ed[1])[0] == "unknown"
    # a host with a plain key is checked against it even if a CA line matches it too
    kh2 = view(tmp_path, f"@cert-authority * {ca[0]}\ngpu-001 {ed[0]}\n", "kh2")
    assert kh2.lookup("gpu-001").check(ed[1])[0] == "ok"


def test_changed_and_unknown(tmp_path, keys):
    ed, ed2, ec = keys["ed"], keys["ed2"], keys["ec"]
    kh = view(tmp_path, f"gpu-001 {ed[0]}\ngpu-002 {ec[0]}\n")
    verdict, entry = kh.lookup("gpu-001").check(ed2[1])
    assert verdict == "changed" and entry is not None and entry.line_no == 1
    assert kh.lookup("gpu-002").check(ed[1])[0] == "changed"  # another type only
    assert kh.lookup("gpu-003").check(ed[1]) == ("unknown", None)


def test_rsa_and_types(tmp_path, keys):
    rsa = keys["rsa"]
    kh = view(tmp_path, f"gpu-001 {rsa[0]}\n")
    assert kh.lookup("gpu-001").key_types() == ["ssh-rsa"]
    assert key_type_of(rsa[1]) == "ssh-rsa"
    assert key_type_of(b"\x00\x00") is None


# ----------------------------------------------------------------------------- files
def test_missing_file_is_empty(tmp_path):
    f = KnownHostsFile.load(str(tmp_path / "nope"))
    assert f.entries == [] and not f.exists


def test_dev_null_is_empty():
    assert KnownHostsFile.load("/dev/null").entries == []


def test_unreadable_or_binary_file_is_a_config_error(tmp_path, keys):
    d = tmp_path / "a-directory"
    d.mkdir()
    with pytest.raises(KnownHostsError, match="a-directory: cannot read it"):
        KnownHostsFile.load(str(d))
    binary = tmp_path / "binary"
    binary.write_bytes(b"\x00\x01\x02" + os.urandom(64))
    with pytest.raises(ConfigError, match="binary"):
        KnownHostsFile.load(str(binary))
    junk = tmp_path / "junk"
    junk.write_text("this is not\na known_hosts file at all\n")
    with pytest.raises(ConfigError, match="junk: not a known_hosts file"):
        KnownHostsFile.load(str(junk))
    # one bad line among good ones is skipped, as OpenSSH does
    mixed = tmp_path / "mixed"
    mixed.write_text(f"garbage\ngpu-001 {keys['ed'][0]}\n")
    assert len(KnownHostsFile.load(str(mixed)).entries) == 1
    # comments only: fine
    (tmp_path / "comments").write_text("# nothing yet\n")
    assert KnownHostsFile.load(str(tmp_path / "comments")).entries == []


def test_error_is_one_line(tmp_path):
    d = tmp_path / "dir"
    d.mkdir()
    with pytest.raises(KnownHostsError) as ei:
        KnownHostsCache().view([str(d)]).load()
    assert "\n" not in str(ei.value) and str(d) in str(ei.value)


def test_each_file_is_read_once_and_shared(tmp_path, keys):
    path = tmp_path / "kh"
    path.write_text(f"gpu-001 {keys['ed'][0]}\n")
    cache = KnownHostsCache()
    a = cache.view([str(path)])
    b = cache.view([str(path), str(tmp_path / "missing")])
    assert a.lookup("gpu-001").keys
    path.write_text("")  # not read again
    assert b.lookup("gpu-001").keys
    assert cache.file(str(path)) is cache.file(str(path))


def test_several_files_are_one_view(tmp_path, keys):
    (tmp_path / "user").write_text(f"gpu-001 {keys['ed'][0]}\n")
    (tmp_path / "global").write_text(f"@revoked gpu-001 {keys['ed'][0]}\ngpu-002 {keys['ec'][0]}\n")
    kh = KnownHostsCache().view([str(tmp_path / "user"), str(tmp_path / "global")])
    assert kh.lookup("gpu-001").check(keys["ed"][1])[0] == "revoked"
    assert kh.lookup("gpu-002").check(keys["ec"][1])[0] == "ok"


def test_add_records_plain_and_hashed(tmp_path, keys):
    ed, ec = keys["ed"], keys["ec"]
    path = tmp_path / "sub" / "kh"
    kh = KnownHostsCache().view([str(path)], record_to=str(path))
    assert kh.lookup("gpu-001").keys == []
    kh.add("gpu-001", "ssh-ed25519", ed[1])
    assert kh.lookup("gpu-001").check(ed[1])[0] == "ok"
    assert path.read_text() == f"gpu-001 {ed[0].split()[0]} {ed[0].split()[1]}\n"
    # a file without a final newline gets one before the new line
    path2 = tmp_path / "kh2"
    path2.write_text(f"gpu-002 {ec[0]}")
    kh2 = KnownHostsCache().view([str(path2)], record_to=str(path2), hash_names=True)
    kh2.lookup("gpu-002")
    kh2.add("[10.0.0.3]:2222", "ssh-ed25519", ed[1])
    lines = path2.read_text().splitlines()
    assert len(lines) == 2 and lines[1].startswith("|1|") and "10.0.0.3" not in lines[1]
    salt_b64, mac_b64 = lines[1].split()[0].split("|")[2:4]
    salt = base64.b64decode(salt_b64)
    assert base64.b64decode(mac_b64) == hmac.new(salt, b"[10.0.0.3]:2222", hashlib.sha1).digest()
    assert KnownHostsCache().view([str(path2)]).lookup("[10.0.0.3]:2222").check(ed[1])[0] == "ok"


def test_lookups_from_many_threads(tmp_path, keys):
    lines = [f"gpu-{i:04d} {keys['ed'][0]}" for i in range(500)]
    lines += [f"{hashed(f'h-{i}', os.urandom(20))} {keys['ec'][0]}" for i in range(50)]
    path = tmp_path / "kh"
    path.write_text("\n".join(lines) + "\n")
    cache = KnownHostsCache()
    errors: list[str] = []

    def work(i: int) -> None:
        kh = cache.view([str(path)], record_to=str(path))
        for j in range(i, 500, 16):
            if kh.lookup(f"gpu-{j:04d}").check(keys["ed"][1])[0] != "ok":
                errors.append(f"gpu-{j:04d}")
        if kh.lookup(f"h-{i}").check(keys["ec"][1])[0] != "ok":
            errors.append(f"h-{i}")
        kh.add(f"new-{i}", "ssh-ed25519", keys["ed2"][1])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    final = KnownHostsCache().view([str(path)])
    assert all(final.lookup(f"new-{i}").keys for i in range(16))


# ----------------------------------------------------------------------------- against OpenSSH
needs_keygen = pytest.mark.skipif(shutil.which("ssh-keygen") is None, reason="no ssh-keygen")


@needs_keygen
def test_hashes_written_by_ssh_keygen_match(tmp_path, keys):
    path = tmp_path / "kh"
    path.write_text(f"gpu-001,10.0.0.1 {keys['ed'][0]}\n[gpu-002]:2222 {keys['ec'][0]}\n")
    subprocess.run(["ssh-keygen", "-q", "-H", "-f", str(path)], check=True, capture_output=True,
                   stdin=subprocess.DEVNULL)
    text = path.read_text()
    assert "gpu-001" not in text and text.startswith("|1|")
    kh = KnownHostsCache().view([str(path)])
    assert kh.lookup("gpu-001").check(keys["ed"][1])[0] == "ok"
    assert kh.lookup("10.0.0.1").check(keys["ed"][1])[0] == "ok"
    assert kh.lookup("[gpu-002]:2222").check(keys["ec"][1])[0] == "ok"
    assert kh.lookup("gpu-002").keys == []


@needs_keygen
def test_fingerprint_is_what_ssh_keygen_prints(tmp_path, keys):
    pub = tmp_path / "k.pub"
    pub.write_text(keys["ed"][0] + " comment\n")
    out = subprocess.run(["ssh-keygen", "-l", "-E", "sha256", "-f", str(pub)], check=True,
                         capture_output=True, text=True, stdin=subprocess.DEVNULL).stdout
    assert fingerprint(keys["ed"][1]) == out.split()[1]


@needs_keygen
def test_ssh_keygen_finds_what_we_record(tmp_path, keys):
    path = tmp_path / "kh"
    kh = KnownHostsCache().view([str(path)], record_to=str(path), hash_names=True)
    kh.add("gpu-009", "ssh-ed25519", keys["ed"][1])
    cp = subprocess.run(["ssh-keygen", "-F", "gpu-009", "-f", str(path)], capture_output=True,
                        text=True, stdin=subprocess.DEVNULL)
    assert cp.returncode == 0 and keys["ed"][0].split()[1] in cp.stdout
