"""Fetching a client-given URL without letting the client aim our servers at our own network.

A job's `image` or `audio` may be a URL, so a hostile client could ask us to fetch
`http://169.254.169.254/` (cloud credentials), `http://127.0.0.1:8265/` (the Ray dashboard) or an
internal service. `fetch()` refuses that:

1. the URL is parsed and checked before any network use: scheme (https; http only if the policy
   allows), no `user:pass@`, optional host allow-list, bounded length;
2. the host is resolved here, once, and EVERY address must be public (v4 and v6; IPv4 hidden
   inside IPv6 as mapped / 6to4 / Teredo is unwrapped and checked too). Cloud metadata
   services (by address and by name) are refused in every mode, `allow_private` and
   `trusted_networks` included;
3. the connection goes to exactly those checked addresses: a pinned httpcore network backend
   ignores DNS, so a rebinding DNS answer between check and connect cannot swap the address.
   The URL keeps its host name, so the Host header, TLS SNI and certificate check are unchanged;
4. redirects are followed by hand, each hop going through 1-3 again, at most `max_redirects`;
5. the body is streamed with a byte cap (Content-Length is checked first but never trusted),
   under connect/read timeouts and one total deadline that also bounds every socket operation.

Errors are `FetchError`s whose text names the host only: never the userinfo, path or query of a
URL (presigned URLs carry their signature there). The caller adds which field it was. Whatever
a URL holds (bad IDNA labels such as `xn--a`, odd brackets, ports, escapes), parsing it ends in
a value or a 4xx FetchError, never another exception: a client's URL cannot make a 500.
"""
from __future__ import annotations

import ipaddress
import re
import socket
import ssl
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import BinaryIO, Iterator

import certifi
import httpcore
import httpx

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
REDIRECT_STATUSES = (301, 302, 303, 307, 308)
_HOST_RE = re.compile(r"[A-Za-z0-9_.\-]{1,253}|[0-9A-Fa-f:.]+")  # IDNA-encoded name or IP
CHUNK_BYTES = 64 * 1024
# getaddrinfo has no timeout of its own; it runs here so a stuck resolver costs a thread, not
# the request (the lookup is abandoned at the fetch's deadline).
_RESOLVER = ThreadPoolExecutor(max_workers=8, thread_name_prefix="netguard-dns")
# Cloud metadata services: refused in every mode (allow_private, trusted_networks), by address
# and by name (a name is refused wherever it resolves). AWS (IPv4, IPv6 on Nitro, ECS task
# metadata), GCP, Azure and OpenStack use 169.254.169.254 (link-local: refused anyway), Alibaba
# 100.100.100.200 (in the CGNAT range that allow_private admits), Oracle 192.0.0.192.
METADATA_ADDRESSES = frozenset(ipaddress.ip_address(a) for a in (
    "169.254.169.254", "169.254.170.2", "169.254.169.253", "fd00:ec2::254", "fd00:ec2::253",
    "100.100.100.200", "192.0.0.192"))
METADATA_HOSTS = frozenset({"metadata.google.internal", "metadata.goog", "metadata",
                            "instance-data", "instance-data.ec2.internal",
                            "metadata.tencentyun.com", "metadata.azure.com"})


@dataclass(frozen=True)
class FetchPolicy:
    """Which URLs may be fetched and how long / how much a fetch may take."""
    allow_http: bool = False           # plain http (else https only)
    allow_private: bool = False        # loopback / RFC 1918 / ULA / CGNAT (dev only); link-local
                                       # (cloud metadata), multicast, unspecified and reserved
                                       # addresses stay refused even then
    max_redirects: int = 3
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 20.0       # longest silence between two reads
    total_timeout_s: float = 60.0      # whole fetch: DNS, every hop, the whole body
    allowed_hosts: tuple[str, ...] = ()  # when set, only these hosts ("cdn.example.com",
                                         # "*.example.com", "127.0.0.1") may be fetched
    trusted_networks: tuple[str, ...] = ()  # CIDRs exempt from the address check (tests:
                                            # "127.0.0.1/32"; an internal asset server)
    ca_bundle: str | None = None       # PEM file to trust instead of certifi (private CA, tests)
    max_url_length: int = 8192
    user_agent: str = "PersonaForge-Studio input-fetch"


class FetchError(Exception):
    """A URL we will not or could not fetch. `message` is safe to show the client."""

    def __init__(self, message: str, *, code: str, status: int = 400, received: int = 0):
        super().__init__(message)
        self.message = message
        self.code = code
        self.status = status
        self.received = received  # body bytes read before giving up


@dataclass(frozen=True)
class FetchResult:
    size: int
    content_type: str
    redirects: int
    final_host: str


def describe_url(url: httpx.URL | str) -> str:
    """`scheme://host[:port]` of a URL: enough to recognise it, never a credential or token."""
    try:
        u = url if isinstance(url, httpx.URL) else httpx.URL(url)
        host = host_of(u)  # never decodes IDNA: a malformed label cannot raise here
        host = f"[{host}]" if ":" in host else host
        return f"{u.scheme}://{host}" + (f":{u.port}" if u.port else "")
    except Exception:
        return "the URL"


# --- 1. The URL itself --------------------------------------------------------------------

def check_url(url: str | httpx.URL, policy: FetchPolicy) -> httpx.URL:
    """Parse and check a URL before any network use; returns the parsed URL. Any failure to
    parse or decode it (httpx, IDNA, ports, escapes) is a 400 FetchError, never another error."""
    try:
        return _check_url(url, policy)
    except FetchError:
        raise
    except Exception:  # noqa: BLE001 - whatever the parser chokes on is the URL's fault
        raise FetchError("URL could not be parsed (its host name or address is malformed)",
                         code="BAD_URL") from None


def host_of(u: httpx.URL) -> str:
    """The URL's host as text, without decoding IDNA (a malformed `xn--` label cannot raise):
    the ASCII form the connection uses, lower case, brackets and trailing dot removed."""
    return u.raw_host.decode("ascii", "replace").strip("[]").rstrip(".").lower()


def _check_url(url: str | httpx.URL, policy: FetchPolicy) -> httpx.URL:
    text = str(url)
    if len(text) > policy.max_url_length:
        raise FetchError(f"URL is longer than {policy.max_url_length} characters",
                         code="URL_TOO_LONG")
    try:
        u = url if isinstance(url, httpx.URL) else httpx.URL(text)
    except Exception:
        raise FetchError("URL could not be parsed", code="BAD_URL") from None
    allowed = ("https", "http") if policy.allow_http else ("https",)
    if u.scheme not in allowed:
        raise FetchError(f"URL scheme {u.scheme[:20]!r} is not allowed; use "
                         + (" or ".join(allowed)), code="URL_SCHEME_NOT_ALLOWED")
    if u.userinfo:
        raise FetchError(f"URL for {describe_url(u)} carries a user name or password; "
                         "credentials in URLs are refused (use a presigned URL)",
                         code="URL_HAS_CREDENTIALS")
    if not u.raw_host:
        raise FetchError("URL has no host", code="BAD_URL")
    if not _HOST_RE.fullmatch(u.raw_host.decode("ascii", "replace")):
        raise FetchError("URL's host is not a valid host name or address", code="BAD_URL")
    host = host_of(u)
    if _literal(host) is None:
        try:  # the name must decode (IDNA): `xn--a` and friends are not host names
            host.encode("ascii").decode("idna")
            _ = u.host
        except (UnicodeError, ValueError):
            raise FetchError("URL's host is not a valid internationalised host name "
                             "(a malformed xn-- label)", code="BAD_URL") from None
    if host in METADATA_HOSTS:
        raise FetchError(f"host {host} is a cloud metadata service; it is never fetched",
                         code="URL_NOT_ALLOWED")
    _ = u.port  # a port out of range raises here, inside the guard
    if policy.allowed_hosts and not _host_allowed(host, policy.allowed_hosts):
        raise FetchError(f"host {host} is not in this server's list of allowed hosts",
                         code="URL_NOT_ALLOWED")
    return u


def _host_allowed(host: str, allowed: tuple[str, ...]) -> bool:
    host = host.lower().rstrip(".")
    for entry in (a.lower().rstrip(".") for a in allowed):
        if entry.startswith("*."):
            if host.endswith(entry[1:]):
                return True
        elif host == entry.strip("[]"):
            return True
    return False


# --- 2. Where it resolves -----------------------------------------------------------------

def address_problem(ip: Address, policy: FetchPolicy) -> str | None:
    """Why `ip` may not be fetched from under `policy`, or None when it may."""
    if _is_metadata(ip):
        return "a cloud metadata service"
    if any(ip in ipaddress.ip_network(n, strict=False) for n in policy.trusted_networks):
        return None
    judged: list[Address] = [ip]
    if isinstance(ip, ipaddress.IPv6Address):
        # IPv4 inside IPv6 reaches the IPv4 host: a mapped address IS that host; 6to4 and
        # Teredo addresses are judged as themselves and as the IPv4 host they lead to.
        if ip.ipv4_mapped:
            judged = [ip.ipv4_mapped]
        else:
            judged += [a for a in (ip.sixtofour, *(ip.teredo or ())) if a]
    for addr in judged:
        hard, soft = _categories(addr)
        if hard:
            return hard
        if soft and not policy.allow_private:
            return soft
    return None


def _is_metadata(ip: Address) -> bool:
    if ip in METADATA_ADDRESSES:
        return True
    if isinstance(ip, ipaddress.IPv6Address):
        inner = [ip.ipv4_mapped, ip.sixtofour, *(ip.teredo or ())]
        return any(a in METADATA_ADDRESSES for a in inner if a)
    return False


def _categories(ip: Address) -> tuple[str | None, str | None]:
    """(never-allowed reason, allowed-only-with-allow_private reason)."""
    if ip in METADATA_ADDRESSES:
        return "a cloud metadata service", None
    if ip.is_unspecified:
        return "unspecified (it reaches this machine)", None
    if ip.is_link_local:
        return "link-local (where cloud metadata lives)", None
    if ip.is_multicast:
        return "multicast", None
    if ip.is_loopback:
        return None, "loopback"
    if ip.is_private and not ip.is_reserved:
        return None, "private"
    if ip.is_reserved or (isinstance(ip, ipaddress.IPv4Address)
                          and ip == ipaddress.IPv4Address("255.255.255.255")):
        return "reserved", None
    if not ip.is_global:
        return None, "not publicly routable"
    return None, None


def resolve_checked(host: str, port: int, policy: FetchPolicy, deadline: float) -> list[str]:
    """Resolve `host` once and return its addresses, refusing if ANY of them is not allowed."""
    literal = _literal(host)
    if literal is not None:
        addresses: list[Address] = [literal]
    else:
        future = _RESOLVER.submit(socket.getaddrinfo, host, port, 0, socket.SOCK_STREAM)
        try:
            infos = future.result(timeout=max(0.01, deadline - time.monotonic()))
        except FutureTimeout:
            raise FetchError(f"looking up {host} timed out", code="URL_TIMEOUT") from None
        except (socket.gaierror, UnicodeError, OSError):
            raise FetchError(f"host {host} could not be resolved", code="URL_UNREACHABLE") from None
        addresses = []
        for *_, sockaddr in infos:
            addr = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
            if addr not in addresses:
                addresses.append(addr)
    if not addresses:
        raise FetchError(f"host {host} has no address", code="URL_UNREACHABLE")
    for addr in addresses:
        why = address_problem(addr, policy)
        if why:
            subject = (f"address {host}" if addr == _literal(host)
                       else f"host {host} resolves to an address that")
            raise FetchError(f"{subject} is {why}; only public addresses may be fetched",
                             code="URL_NOT_ALLOWED")
    return [str(a) for a in addresses]


def _literal(host: str) -> Address | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


# --- 3. Connecting only to the checked addresses ------------------------------------------

class _DeadlineStream(httpcore.NetworkStream):
    """A socket stream whose every read/write/handshake also ends at the fetch's deadline."""

    def __init__(self, inner: httpcore.NetworkStream, deadline: float):
        self._inner, self._deadline = inner, deadline

    def _cap(self, timeout: float | None) -> float:
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise httpcore.ReadTimeout("total time limit reached")
        return left if timeout is None else min(timeout, left)

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, self._cap(timeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, self._cap(timeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(self, ssl_context: ssl.SSLContext, server_hostname: str | None = None,
                  timeout: float | None = None) -> httpcore.NetworkStream:
        # server_hostname is the URL's host name (not the IP): SNI and certificate check use it.
        tls = self._inner.start_tls(ssl_context, server_hostname, self._cap(timeout))
        return _DeadlineStream(tls, self._deadline)

    def get_extra_info(self, info: str):
        return self._inner.get_extra_info(info)


class _PinnedBackend(httpcore.NetworkBackend):
    """Connects `host` to the addresses checked for it, never re-resolving the name."""

    def __init__(self, host: str, addresses: list[str], deadline: float):
        self._host, self._addresses, self._deadline = host.lower(), addresses, deadline
        self._inner = httpcore.SyncBackend()

    def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                    local_address: str | None = None,
                    socket_options=None) -> httpcore.NetworkStream:
        if host.lower().strip("[]") != self._host.strip("[]"):
            raise httpcore.ConnectError("connection to a host that was not checked")
        last: Exception = httpcore.ConnectError("no address")
        for ip in self._addresses:
            left = self._deadline - time.monotonic()
            if left <= 0:
                raise httpcore.ConnectTimeout("total time limit reached")
            try:
                stream = self._inner.connect_tcp(ip, port, min(timeout or left, left),
                                                 local_address, socket_options)
                return _DeadlineStream(stream, self._deadline)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as e:
                last = e
        raise last

    def connect_unix_socket(self, path: str, timeout: float | None = None, socket_options=None):
        raise httpcore.ConnectError("unix sockets are not fetched")

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


class _BodyStream(httpx.SyncByteStream):
    def __init__(self, inner):
        self._inner = inner

    def __iter__(self) -> Iterator[bytes]:
        yield from self._inner

    def close(self) -> None:
        if hasattr(self._inner, "close"):
            self._inner.close()


class _PinnedTransport(httpx.BaseTransport):
    """httpx transport over one httpcore pool that uses the pinned backend (no proxies)."""

    def __init__(self, backend: _PinnedBackend, ssl_context: ssl.SSLContext):
        self._pool = httpcore.ConnectionPool(ssl_context=ssl_context, network_backend=backend,
                                             max_connections=1, http1=True, http2=False)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        req = httpcore.Request(
            method=request.method,
            url=httpcore.URL(scheme=request.url.raw_scheme, host=request.url.raw_host,
                             port=request.url.port, target=request.url.raw_path),
            headers=request.headers.raw, content=request.stream, extensions=request.extensions)
        resp = self._pool.handle_request(req)
        return httpx.Response(status_code=resp.status, headers=resp.headers,
                              stream=_BodyStream(resp.stream), extensions=resp.extensions)

    def close(self) -> None:
        self._pool.close()


# --- 4 + 5. Fetching, hop by hop -----------------------------------------------------------

_TIMEOUTS = (httpcore.TimeoutException, httpx.TimeoutException)
# Not OSError: a failing write to our own disk is our fault (a 5xx), not the URL's.
_TRANSPORT_ERRORS = (httpcore.NetworkError, httpcore.ProtocolError, httpcore.UnsupportedProtocol,
                     httpx.TransportError)


def fetch(url: str, sink: BinaryIO, max_bytes: int, policy: FetchPolicy) -> FetchResult:
    """Fetch `url` into `sink` (at most `max_bytes`), following checked redirects."""
    deadline = time.monotonic() + policy.total_timeout_s
    ssl_context = ssl.create_default_context(cafile=policy.ca_bundle or certifi.where())
    current = check_url(url, policy)
    for hop in range(policy.max_redirects + 1):
        where = describe_url(current)
        with _request_errors(where, policy, deadline):
            outcome = _one_hop(current, sink, max_bytes, policy, deadline, ssl_context)
        if isinstance(outcome, FetchResult):
            return FetchResult(outcome.size, outcome.content_type, hop, host_of(current))
        try:
            target = current.join(outcome)
        except Exception:
            raise FetchError(f"{where} redirected to an invalid URL", code="BAD_URL") from None
        current = check_url(target, policy)  # a redirect: the next hop is checked like the first
    raise FetchError(f"{describe_url(url)} redirected more than {policy.max_redirects} times",
                     code="TOO_MANY_REDIRECTS")


def _one_hop(url: httpx.URL, sink: BinaryIO, max_bytes: int, policy: FetchPolicy,
             deadline: float, ssl_context: ssl.SSLContext) -> FetchResult | str:
    """One request. Returns the result, or the Location of a redirect."""
    port = url.port or (443 if url.scheme == "https" else 80)
    addresses = resolve_checked(url.raw_host.decode("ascii"), port, policy, deadline)
    backend = _PinnedBackend(url.raw_host.decode("ascii"), addresses, deadline)
    timeout = httpx.Timeout(connect=policy.connect_timeout_s, read=policy.read_timeout_s,
                            write=policy.read_timeout_s, pool=policy.connect_timeout_s)
    headers = {"User-Agent": policy.user_agent, "Accept-Encoding": "identity", "Accept": "*/*"}
    # trust_env=False: no proxy from the environment (it would bypass the pinning), no .netrc.
    with httpx.Client(transport=_PinnedTransport(backend, ssl_context), timeout=timeout,
                      follow_redirects=False, trust_env=False, headers=headers) as client:
        with client.stream("GET", url) as resp:
            if resp.status_code in REDIRECT_STATUSES:
                location = resp.headers.get("location")
                if not location:
                    raise FetchError(f"{describe_url(url)} redirected without a Location",
                                     code="URL_FETCH_FAILED")
                return location
            if not 200 <= resp.status_code < 300:
                raise FetchError(f"{describe_url(url)} answered HTTP {resp.status_code}",
                                 code="URL_FETCH_FAILED")
            encoding = resp.headers.get("content-encoding", "identity").strip().lower()
            if encoding not in ("", "identity"):
                raise FetchError(f"{describe_url(url)} sent a {encoding}-compressed body although "
                                 "none was asked for", code="URL_FETCH_FAILED", status=415)
            declared = resp.headers.get("content-length")
            if declared and declared.strip().isdigit() and int(declared) > max_bytes:
                raise FetchError(f"{describe_url(url)} announces {int(declared)} bytes, more than "
                                 f"the {max_bytes}-byte limit", code="PAYLOAD_TOO_LARGE",
                                 status=413)
            size = 0
            for chunk in resp.iter_raw(CHUNK_BYTES):
                size += len(chunk)
                if size > max_bytes:
                    raise FetchError(f"{describe_url(url)} sent more than the {max_bytes}-byte "
                                     "limit", code="PAYLOAD_TOO_LARGE", status=413, received=size)
                if time.monotonic() > deadline:
                    raise httpcore.ReadTimeout("total time limit reached")
                sink.write(chunk)
            if size == 0:
                raise FetchError(f"{describe_url(url)} sent an empty body", code="EMPTY_INPUT")
            return FetchResult(size, resp.headers.get("content-type", ""), 0, host_of(url))


def _transport_reason(exc: BaseException) -> str:
    """A short, secret-free reason for a transport failure (no URL, no server text)."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLCertVerificationError):
            return "its TLS certificate could not be verified"
        if isinstance(seen, ssl.SSLError):
            return "the TLS handshake failed"
        if isinstance(seen, ConnectionRefusedError):
            return "connection refused"
        seen = seen.__cause__ or seen.__context__
    if isinstance(exc, (httpcore.ConnectError, httpx.ConnectError)):
        return "could not connect"
    if isinstance(exc, (httpcore.ProtocolError, httpx.ProtocolError)):
        return "the server broke the HTTP protocol"
    return "the connection failed"


@contextmanager
def _request_errors(where: str, policy: FetchPolicy, deadline: float) -> Iterator[None]:
    """One request's failures as FetchErrors naming the host only (a fetch's and a post's)."""
    try:
        yield
    except _TIMEOUTS:
        total = time.monotonic() >= deadline - 0.01
        raise FetchError(f"{where} did not answer in time ("
                         + (f"total limit {policy.total_timeout_s:g} s" if total else
                            f"no data for {policy.read_timeout_s:g} s or could not connect "
                            f"in {policy.connect_timeout_s:g} s") + ")",
                         code="URL_TIMEOUT") from None
    except _TRANSPORT_ERRORS as e:
        raise FetchError(f"{where} could not be reached: {_transport_reason(e)}",
                         code="URL_UNREACHABLE") from None
    except (httpx.InvalidURL, UnicodeError, ValueError):
        # the URL passed check_url but httpx/httpcore cannot build a request from it
        raise FetchError(f"{where} could not be requested: the URL is malformed",
                         code="BAD_URL") from None


def post(url: str, body: bytes, headers: dict[str, str], policy: FetchPolicy) -> int:
    """POST `body` to `url` under the same guard as a fetch (checked URL, every address public,
    connections pinned to the checked addresses, one total deadline), following 307/308
    redirects (which keep the method and body), each hop checked again. Returns the final
    HTTP status; FetchError when the URL is refused or the server cannot be reached."""
    deadline = time.monotonic() + policy.total_timeout_s
    ssl_context = ssl.create_default_context(cafile=policy.ca_bundle or certifi.where())
    current = check_url(url, policy)
    for _ in range(policy.max_redirects + 1):
        where = describe_url(current)
        port = current.port or (443 if current.scheme == "https" else 80)
        with _request_errors(where, policy, deadline):
            host = current.raw_host.decode("ascii")
            addresses = resolve_checked(host, port, policy, deadline)
            timeout = httpx.Timeout(connect=policy.connect_timeout_s, read=policy.read_timeout_s,
                                    write=policy.read_timeout_s, pool=policy.connect_timeout_s)
            transport = _PinnedTransport(_PinnedBackend(host, addresses, deadline), ssl_context)
            with httpx.Client(transport=transport, timeout=timeout, follow_redirects=False,
                              trust_env=False) as client:
                resp = client.post(current, content=body, headers={
                    "User-Agent": policy.user_agent, **headers})
        if resp.status_code not in (307, 308) or not resp.headers.get("location"):
            return resp.status_code
        try:
            current = check_url(current.join(resp.headers["location"]), policy)
        except FetchError:
            raise
        except Exception:
            raise FetchError(f"{where} redirected to an invalid URL", code="BAD_URL") from None
    raise FetchError(f"{describe_url(url)} redirected more than {policy.max_redirects} times",
                     code="TOO_MANY_REDIRECTS")
