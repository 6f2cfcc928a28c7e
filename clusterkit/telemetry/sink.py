"""Writes of pre-built line protocol to an InfluxDB v2 write API (``/api/v2/write``).

Through influxdb-client's *synchronous* write API: one request per batch that clusterkit cut
(:data:`DEFAULT_BATCH_LINES` lines), gzip on, precision ``ms``. The client's batching mode is
not used (silent-loss reports upstream; its ``flush()`` does nothing); batches, retries and the
spool are clusterkit's.

What an answer means (:class:`Outcome`):

- 2xx (the store answers 204): ``written``.
- 408, 429, 5xx, no connection, no answer within the request timeout: ``unavailable``. Retried
  with exponential backoff (0.25 s, 0.5 s, 1 s, … and a server's ``Retry-After``) for at most
  ``max_attempts`` tries and never past the caller's deadline; then the batch is spooled.
- 401, 403, 404 (token, org or bucket wrong): ``refused``. Not retried; the batch is spooled
  (it replays once the configuration is fixed).
- any other 4xx (400 malformed, 413 too large, 422 …): ``rejected``. Not retried: sending it
  again cannot help. The caller keeps it aside (the spool's ``rejected/``) and reports it.

The token comes from the environment or a file (:func:`resolve_token`), never from the command
line; it is in no message this module makes (:func:`redact`).
"""

from __future__ import annotations

import os
import random
import time
import urllib.parse
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any, Optional, Protocol

from clusterkit.errors import UsageError
from clusterkit.telemetry.lineproto import PRECISION

DEFAULT_BATCH_LINES = 5000
#: one request's limit (connect + answer), seconds; never more than what is left of the deadline
DEFAULT_REQUEST_TIMEOUT_S = 5.0
DEFAULT_MAX_ATTEMPTS = 4
DEFAULT_BACKOFF_S = 0.25
TOKEN_ENV = "INFLUX_TOKEN"
TOKEN_FILE_ENV = "CLUSTERKIT_INFLUX_TOKEN_FILE"
#: below this many seconds left, no new request is started
_MIN_REQUEST_S = 0.05


class Outcome(str, Enum):
    WRITTEN = "written"
    UNAVAILABLE = "unavailable"
    REFUSED = "refused"
    REJECTED = "rejected"

    def __str__(self) -> str:  # pragma: no cover - cosmetic
        return self.value


@dataclass
class BatchResult:
    outcome: Outcome
    #: the HTTP status when the store answered
    status: Optional[int] = None
    #: what happened, one line, without the token ("connection refused", "HTTP 400: …")
    detail: str = ""
    attempts: int = 0
    elapsed_s: float = 0.0

    @property
    def ok(self) -> bool:
        return self.outcome is Outcome.WRITTEN


class Writer(Protocol):
    """What replay and emit send through: :class:`InfluxSink`, or a test's stand-in."""

    def write(self, body: str, *, deadline: float) -> BatchResult: ...


def batches(lines: Sequence[str], size: int = DEFAULT_BATCH_LINES) -> Iterator[Sequence[str]]:
    """``lines`` cut into slices of at most ``size`` lines."""
    if size < 1:
        raise ValueError("batch size must be at least 1")
    for i in range(0, len(lines), size):
        yield lines[i:i + size]


def redact(text: str, token: Optional[str]) -> str:
    """``text`` as one line, with the token (if any) replaced by ``***``."""
    line = " ".join(str(text).split())
    if token:
        line = line.replace(token, "***")
        stripped = token.strip()
        if stripped and stripped != token:
            line = line.replace(stripped, "***")
    return line


def display_url(url: str) -> str:
    """The URL for messages: scheme, host, port and path; no credentials, no query."""
    try:
        u = urllib.parse.urlsplit(url)
    except ValueError:
        return "<bad url>"
    host = u.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = f":{u.port}" if u.port else ""
    return f"{u.scheme}://{host}{port}{u.path.rstrip('/')}"


def check_url(url: str, option: str = "--influx-url") -> str:
    """An ``http(s)://host[:port][/path]`` URL, or UsageError."""
    try:
        u = urllib.parse.urlsplit(url)
        _ = u.port  # a port that is not a number raises here
    except ValueError:
        raise UsageError(f"{option}: not a URL") from None
    if u.scheme not in ("http", "https") or not u.hostname:
        raise UsageError(f"{option} {display_url(url) if u.hostname else url!r}: want http(s)://HOST[:PORT]")
    if u.username or u.password:
        raise UsageError(f"{option}: credentials do not belong in the URL; give the token through "
                         f"${TOKEN_ENV} or --influx-token-file")
    return url.rstrip("/")


def _read_token_file(path: str, what: str) -> str:
    try:
        with open(path, encoding="utf-8") as fh:
            content = fh.read()
    except OSError as e:
        raise UsageError(f"{what} {path}: cannot read it: {e.strerror or type(e).__name__}") from None
    except UnicodeDecodeError:
        raise UsageError(f"{what} {path}: not a text file") from None
    token = content.strip()
    if not token:
        raise UsageError(f"{what} {path}: empty")
    if len(token.split()) != 1:
        raise UsageError(f"{what} {path}: holds more than one word (want the token alone)")
    return token


def resolve_token(token_file: Optional[str] = None, environ: Optional[Mapping[str, str]] = None) -> Optional[str]:
    """The write token: from ``token_file`` (``--influx-token-file``) when given, else
    ``$INFLUX_TOKEN``, else the file ``$CLUSTERKIT_INFLUX_TOKEN_FILE`` names; None when none is
    set (stores that need no token: VictoriaMetrics, a Telegraf listener without one).
    UsageError (naming the file, never its content) when a file cannot be read."""
    env = os.environ if environ is None else environ
    if token_file:
        return _read_token_file(token_file, "--influx-token-file")
    token = (env.get(TOKEN_ENV) or "").strip()
    if token:
        return token
    path = env.get(TOKEN_FILE_ENV)
    if path:
        return _read_token_file(path, f"${TOKEN_FILE_ENV}")
    return None


def _classify(status: int) -> Outcome:
    if status in (408, 429) or status >= 500:
        return Outcome.UNAVAILABLE
    if status in (401, 403, 404):
        return Outcome.REFUSED
    return Outcome.REJECTED


def _why(e: BaseException, timeout_s: float) -> str:
    """A short cause for a failure that got no HTTP answer."""
    import socket

    import urllib3.exceptions as ux

    chain: list[BaseException] = []
    seen: Optional[BaseException] = e
    while seen is not None and len(chain) < 8:
        chain.append(seen)
        nxt = getattr(seen, "reason", None)
        seen = nxt if isinstance(nxt, BaseException) else (seen.__cause__ or seen.__context__)
    for x in chain:  # the cause first: urllib3's NewConnectionError is also a ConnectTimeoutError
        if isinstance(x, ConnectionRefusedError):
            return "connection refused"
        if isinstance(x, ConnectionResetError):
            return "connection reset"
        if isinstance(x, socket.gaierror):
            return "host name not found"
    for x in chain:
        if isinstance(x, (ux.TimeoutError, socket.timeout, TimeoutError)):
            return f"no answer within {timeout_s:g} s"
    for x in chain:
        if isinstance(x, ux.ProtocolError):
            return "connection closed without an answer"
        if isinstance(x, OSError) and x.strerror:
            return x.strerror.lower()
    return type(e).__name__


class InfluxSink:
    """One store: ``url`` (``http://host:8086``), ``org``, ``bucket``, ``token``.

    :meth:`write` sends one pre-built batch, retrying transient failures until
    ``max_attempts`` or the deadline (a :func:`time.monotonic` instant), whichever comes first.
    """

    def __init__(self, url: str, *, org: str, bucket: str, token: Optional[str] = None,
                 request_timeout_s: float = DEFAULT_REQUEST_TIMEOUT_S, gzip: bool = True,
                 max_attempts: int = DEFAULT_MAX_ATTEMPTS, backoff_s: float = DEFAULT_BACKOFF_S,
                 sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic) -> None:
        from influxdb_client import InfluxDBClient, WritePrecision
        from influxdb_client.client.write_api import SYNCHRONOUS

        self.url = url.rstrip("/")
        self.org = org
        self.bucket = bucket
        self._token = token or None
        self.request_timeout_s = float(request_timeout_s)
        self.max_attempts = max(1, int(max_attempts))
        self.backoff_s = float(backoff_s)
        self._sleep = sleep
        self._clock = clock
        # retries=False: no urllib3 retries behind our back; every try is ours and bounded
        # an empty token sends no Authorization header
        self._client = InfluxDBClient(url=self.url, token=self._token or "", org=org, enable_gzip=gzip,
                                      timeout=int(self.request_timeout_s * 1000), retries=False)
        self._api = self._client.write_api(write_options=SYNCHRONOUS)
        # (WritePrecision's members are plain strings; the write API is annotated with the class)
        self._precision: Any = WritePrecision.MS
        assert self._precision == PRECISION

    def __repr__(self) -> str:  # never the token
        return f"InfluxSink({display_url(self.url)!r}, org={self.org!r}, bucket={self.bucket!r})"

    def __enter__(self) -> "InfluxSink":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        try:
            self._client.close()
        except Exception:  # noqa: BLE001 - closing a pool is not worth an error
            pass

    def _post(self, body: str, timeout_s: float) -> None:
        # the request timeout is read from the client's configuration on every request: set it
        # to what is left of this try's budget (urllib3 total timeout: connect + answer)
        self._client.conf.timeout = max(1, int(timeout_s * 1000))
        self._api.write(bucket=self.bucket, org=self.org, record=body, write_precision=self._precision)

    def write(self, body: str, *, deadline: float) -> BatchResult:
        """Send one batch (lines joined by newlines). Never raises for store trouble."""
        from influxdb_client.rest import ApiException

        start = self._clock()
        attempts = 0
        last = BatchResult(Outcome.UNAVAILABLE, detail="no time left to send")
        while attempts < self.max_attempts:
            left = deadline - self._clock()
            if left < _MIN_REQUEST_S:
                break
            timeout_s = min(self.request_timeout_s, left)
            attempts += 1
            retry_after: Optional[float] = None
            try:
                self._post(body, timeout_s)
                return BatchResult(Outcome.WRITTEN, status=204, attempts=attempts,
                                   elapsed_s=self._clock() - start)
            except ApiException as e:
                status = int(e.status or 0)
                message = getattr(e, "message", None) or ""
                if getattr(e, "response", None) is None:  # made without a response: only a reason
                    message = e.reason or message
                if isinstance(message, bytes):
                    message = message.decode("utf-8", "replace")
                detail = redact(f"HTTP {status}" + (f": {message}" if message else ""), self._token)[:300]
                outcome = _classify(status)
                last = BatchResult(outcome, status=status, detail=detail, attempts=attempts)
                if outcome is not Outcome.UNAVAILABLE:
                    last.elapsed_s = self._clock() - start
                    return last
                retry_after = _seconds(getattr(e, "retry_after", None))
            except Exception as e:  # noqa: BLE001 - no answer at all: down, slow, reset
                last = BatchResult(Outcome.UNAVAILABLE, detail=redact(_why(e, timeout_s), self._token),
                                   attempts=attempts)
            if attempts >= self.max_attempts:
                break
            delay = self.backoff_s * (2 ** (attempts - 1)) * (0.8 + 0.4 * random.random())
            if retry_after is not None:
                delay = max(delay, retry_after)
            left = deadline - self._clock()
            if delay + _MIN_REQUEST_S >= left:
                break
            self._sleep(delay)
        last.attempts = attempts
        last.elapsed_s = self._clock() - start
        return last


def _seconds(value: Any) -> Optional[float]:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if 0 <= v < 3600 else None
