"""URL inputs against hostile servers and addresses: every refusal is the guard's, names the
field, and (where it matters) happens before any connection is made."""
from __future__ import annotations

import hashlib
import io
import socket

import pytest

from serve_app.inputs import FetchPolicy, InputError, Limits, acquire, fetch_url
from serve_app.netguard import FetchError, fetch
from tests.support.media import png_bytes, wav_bytes

FIELD = "input.image"
# What the tests trust: the local server's address only. 10.x, 169.254.x, ::1 stay refused.
LOCAL = FetchPolicy(allow_http=True, trusted_networks=("127.0.0.1/32",), connect_timeout_s=1,
                    read_timeout_s=2, total_timeout_s=5)


def _refused(value: str, policy: FetchPolicy, tmp_path, kind: str = "image") -> InputError:
    with pytest.raises(InputError) as info:
        acquire(value, FIELD, kind, str(tmp_path / "in"), policy=policy)
    assert FIELD in str(info.value)
    return info.value


# --- happy paths -----------------------------------------------------------------------------

def test_image_and_audio_from_local_server(server, tmp_path, connections):
    png, wav = png_bytes(96, 80), wav_bytes(1.0)
    got = acquire(server.serve("/portrait.png", png, "image/png"), FIELD, "image",
                  str(tmp_path), policy=LOCAL)
    assert (got.format, got.width, got.height, got.source) == ("PNG", 96, 80, "url")
    assert open(got.path, "rb").read() == png
    assert got.sha256 == hashlib.sha256(png).hexdigest() and got.size_bytes == len(png)

    audio = acquire(server.serve("/voice.wav", wav, "audio/wav", chunked=True), "input.audio",
                    "audio", str(tmp_path), policy=LOCAL)
    assert audio.sample_rate == 16000 and audio.channels == 1
    assert audio.duration_s == pytest.approx(1.0, abs=1e-3)
    # PCM in, PCM out: the decoded samples are the sent samples.
    assert open(audio.path, "rb").read()[-32000:] == wav[-32000:]
    assert {c[0] for c in connections} == {"127.0.0.1"}


def test_relative_redirects_within_the_limit_are_followed(server, tmp_path):
    server.serve("/final.png", png_bytes())
    server.redirect("/r3", "/final.png", 308)
    server.redirect("/r2", server.url("/r3"), 307)
    start = server.redirect("/r1", "r2", 301)
    got = acquire(start, FIELD, "image", str(tmp_path), policy=LOCAL)  # exactly 3 redirects
    assert got.width == 96
    assert [p for p, _ in server.hits] == ["/r1", "/r2", "/r3", "/final.png"]


def test_environment_proxies_are_ignored(server, tmp_path, monkeypatch):
    # A proxy would resolve the name itself and defeat the pinned address.
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")
    data = fetch_url(server.serve("/a.bin", b"x" * 100), FIELD, 1000, LOCAL)
    assert data == b"x" * 100 and server.hits == [("/a.bin", f"127.0.0.1:{server.port}")]


# --- addresses that must never be fetched ----------------------------------------------------

BLOCKED = ["https://127.0.0.1/a.png", "https://[::1]/a.png", "https://localhost/a.png",
           "https://169.254.169.254/latest/meta-data/", "https://[::ffff:127.0.0.1]/a.png",
           "https://[::ffff:169.254.169.254]/", "https://0.0.0.0/a.png", "https://2130706433/",
           "https://0x7f000001/", "https://127.1/", "https://10.0.0.1/a.png",
           "https://192.168.1.1/", "https://172.16.0.1/", "https://100.64.0.1/",
           "https://[fe80::1]/", "https://[fc00::1]/", "https://[2002:7f00:1::]/",
           "https://224.0.0.1/", "https://[::]/"]


@pytest.mark.parametrize("url", BLOCKED)
def test_default_policy_refuses_non_public_addresses_without_connecting(url, tmp_path,
                                                                        connections):
    err = _refused(url, FetchPolicy(connect_timeout_s=0.2, total_timeout_s=1), tmp_path)
    assert (err.status, err.code) == (400, "URL_NOT_ALLOWED")
    assert "only public addresses" in err.message
    assert connections == []


@pytest.mark.parametrize("url", ["http://127.0.0.1/a.png", "http://[::1]/", "http://localhost/",
                                 "http://169.254.169.254/latest/meta-data/"])
def test_default_policy_refuses_plain_http(url, tmp_path, connections):
    err = _refused(url, FetchPolicy(), tmp_path)
    assert (err.status, err.code) == (400, "URL_SCHEME_NOT_ALLOWED") and connections == []
    # And with http allowed, the address check still refuses it.
    err = _refused(url, FetchPolicy(allow_http=True), tmp_path)
    assert err.code == "URL_NOT_ALLOWED" and connections == []


@pytest.mark.parametrize("url", ["http://169.254.169.254/", "http://0.0.0.0/", "http://[fe80::1]/",
                                 "http://224.0.0.1/"])
def test_allow_private_still_refuses_metadata_unspecified_multicast(url, tmp_path, connections):
    err = _refused(url, FetchPolicy(allow_http=True, allow_private=True), tmp_path)
    assert err.code == "URL_NOT_ALLOWED" and connections == []


@pytest.mark.parametrize("location", [
    "http://10.0.0.1/x.png", "http://169.254.169.254/latest/meta-data/iam/",
    "http://[::1]:{port}/img.png", "http://127.0.0.2:{port}/img.png",
    "http://[::ffff:10.0.0.1]/", "http://0.0.0.0:{port}/img.png"])
def test_redirect_to_private_address_refused_before_connecting(location, server, tmp_path,
                                                               connections):
    server.serve("/img.png", png_bytes())
    start = server.redirect("/go", location.format(port=server.port))
    # Short timeouts: had the client tried 10.0.0.1 / 169.254.169.254 it would fail as a
    # timeout or a refused connection, not as the guard's URL_NOT_ALLOWED.
    policy = FetchPolicy(allow_http=True, trusted_networks=("127.0.0.1/32",),
                         connect_timeout_s=0.3, read_timeout_s=0.5, total_timeout_s=2)
    err = _refused(start, policy, tmp_path)
    assert (err.status, err.code) == (400, "URL_NOT_ALLOWED")
    assert connections == [("127.0.0.1", server.port)]  # the first hop only
    assert [p for p, _ in server.hits] == ["/go"]


@pytest.mark.parametrize("location,code", [
    ("file:///etc/passwd", "URL_SCHEME_NOT_ALLOWED"),
    ("gopher://127.0.0.1:6379/_FLUSHALL", "URL_SCHEME_NOT_ALLOWED"),
    ("http://admin:hunter2@127.0.0.1:{port}/img.png", "URL_HAS_CREDENTIALS")])
def test_redirect_to_other_schemes_or_credentials_refused(location, code, server, tmp_path,
                                                          connections):
    server.serve("/img.png", png_bytes())
    err = _refused(server.redirect("/go", location.format(port=server.port)), LOCAL, tmp_path)
    assert err.code == code and "hunter2" not in str(err) and "admin" not in str(err)
    assert len(connections) == 1


def test_https_to_http_downgrade_refused(tls_server, server, monkeypatch, tmp_path):
    _fake_dns(monkeypatch, {"media.example.test": [["127.0.0.1"]]})
    server.serve("/img.png", png_bytes())
    tls_server.redirect("/go", server.url("/img.png"))
    policy = FetchPolicy(trusted_networks=("127.0.0.1/32",), ca_bundle=tls_server.ca_file)
    err = _refused(tls_server.url("/go", host="media.example.test"), policy, tmp_path)
    assert err.code == "URL_SCHEME_NOT_ALLOWED" and server.hits == []
    assert [p for p, _ in tls_server.hits] == ["/go"]


def test_too_many_redirects(server, tmp_path):
    for i in range(10):
        server.redirect(f"/loop{i}", f"/loop{i + 1}")
    err = _refused(server.url("/loop0"), LOCAL, tmp_path)
    assert (err.status, err.code) == (400, "TOO_MANY_REDIRECTS") and "3" in err.message
    assert len(server.hits) == LOCAL.max_redirects + 1


def test_allowed_hosts_restricts_even_when_private_is_allowed(server, tmp_path):
    policy = FetchPolicy(allow_http=True, allow_private=True, allowed_hosts=("127.0.0.1",))
    server.serve("/img.png", png_bytes())
    assert acquire(server.url("/img.png"), FIELD, "image", str(tmp_path), policy=policy).width == 96
    err = _refused(server.redirect("/go", server.url("/img.png", host="localhost")), policy,
                   tmp_path)
    assert err.code == "URL_NOT_ALLOWED" and "allowed hosts" in err.message


# --- DNS: resolved once, every answer checked, the checked address is the one used -----------

def _fake_dns(monkeypatch, answers: dict[str, list[list[str]]]):
    """socket.getaddrinfo where each name answers from a list per call (the last repeats)."""
    real, calls = socket.getaddrinfo, []

    def fake(host, port, *args, **kwargs):
        if host in answers:
            calls.append(host)
            seq = answers[host]
            ips = seq[min(len(calls) - 1, len(seq) - 1)]
            return [(socket.AF_INET6 if ":" in ip else socket.AF_INET, socket.SOCK_STREAM, 6, "",
                     (ip, port)) for ip in ips]
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", fake)
    return calls


def test_any_private_answer_refuses_the_host(monkeypatch, tmp_path, connections):
    _fake_dns(monkeypatch, {"media.example.test": [["93.184.216.34", "127.0.0.1"]]})
    err = _refused("https://media.example.test/a.png", FetchPolicy(), tmp_path)
    assert err.code == "URL_NOT_ALLOWED" and connections == []


@pytest.mark.parametrize("answer", [["10.0.0.7"], ["169.254.169.254"], ["127.0.0.2"], ["::1"],
                                    ["93.184.216.34", "192.168.0.9"]])
def test_redirect_to_a_name_that_resolves_private_is_refused(answer, server, monkeypatch,
                                                             tmp_path, connections):
    # The redirect's target is a host NAME: it is resolved and every answer checked before
    # any connection, like the first hop's (127.0.0.1 itself is trusted here; .2 is not).
    calls = _fake_dns(monkeypatch, {"internal.example.test": [answer]})
    server.serve("/img.png", png_bytes())
    start = server.redirect("/go", f"http://internal.example.test:{server.port}/img.png")
    policy = FetchPolicy(allow_http=True, trusted_networks=("127.0.0.1/32",),
                         connect_timeout_s=0.3, read_timeout_s=0.5, total_timeout_s=2)
    err = _refused(start, policy, tmp_path)
    assert (err.status, err.code) == (400, "URL_NOT_ALLOWED")
    assert "host internal.example.test resolves to an address that" in err.message
    assert calls == ["internal.example.test"]
    assert connections == [("127.0.0.1", server.port)]  # the first hop only
    assert [p for p, _ in server.hits] == ["/go"]


def test_rebinding_after_the_check_cannot_swap_the_address(server, monkeypatch, tmp_path,
                                                           connections):
    # First answer public (checked, allowed); any later lookup would say 127.0.0.1, where our
    # server listens. The connection must go to the checked address, never re-resolve.
    calls = _fake_dns(monkeypatch, {"media.example.test": [["93.184.216.34"], ["127.0.0.1"]]})
    server.serve("/a.png", png_bytes())
    url = f"http://media.example.test:{server.port}/a.png"
    err = _refused(url, FetchPolicy(allow_http=True, connect_timeout_s=0.5), tmp_path)
    assert err.code == "URL_UNREACHABLE"  # the spy refuses 93.184.216.34: nothing leaves
    assert connections == [("93.184.216.34", server.port)]
    assert calls == ["media.example.test"] and server.hits == []


def test_pinned_address_keeps_the_host_header(server, monkeypatch, tmp_path, connections):
    calls = _fake_dns(monkeypatch, {"media.example.test": [["127.0.0.1"], ["10.0.0.1"]]})
    png = png_bytes()
    server.serve("/a.png", png)
    got = acquire(f"http://media.example.test:{server.port}/a.png", FIELD, "image",
                  str(tmp_path), policy=LOCAL)
    assert open(got.path, "rb").read() == png
    assert calls == ["media.example.test"]
    assert connections == [("127.0.0.1", server.port)]
    assert server.hits == [("/a.png", f"media.example.test:{server.port}")]


def test_tls_pinned_address_verifies_the_host_name(tls_server, monkeypatch, tmp_path,
                                                   connections):
    _fake_dns(monkeypatch, {"media.example.test": [["127.0.0.1"], ["10.0.0.1"]]})
    png = png_bytes()
    tls_server.serve("/a.png", png)
    policy = FetchPolicy(trusted_networks=("127.0.0.1/32",), ca_bundle=tls_server.ca_file)
    got = acquire(tls_server.url("/a.png", host="media.example.test"), FIELD, "image",
                  str(tmp_path), policy=policy)
    assert open(got.path, "rb").read() == png  # SNI + certificate checked against the name
    # The same server by IP: the certificate does not name 127.0.0.1, so it is refused.
    err = _refused(tls_server.url("/a.png"), policy, tmp_path)
    assert err.code == "URL_UNREACHABLE" and "certificate" in err.message


# --- size, time, secrets --------------------------------------------------------------------

def test_chunked_body_without_length_is_cut_at_the_cap(server, tmp_path):
    def endless(h):
        h.send_response(200)
        h.send_header("Transfer-Encoding", "chunked")
        h.end_headers()
        block = b"\0" * 65536
        for _ in range(2000):  # 128 MiB if nobody stops it
            h.wfile.write(b"10000\r\n" + block + b"\r\n")
    server.routes["/endless"] = endless
    with pytest.raises(FetchError) as info:
        fetch(server.url("/endless"), io.BytesIO(), 200_000, LOCAL)
    assert (info.value.status, info.value.code) == (413, "PAYLOAD_TOO_LARGE")
    assert 200_000 < info.value.received <= 200_000 + 65536
    dest = tmp_path / "in"
    with pytest.raises(InputError) as info2:
        acquire(server.url("/endless"), "input.audio", "audio", str(dest), policy=LOCAL,
                limits=Limits(max_audio_bytes=300_000))
    assert info2.value.status == 413 and "input.audio" in str(info2.value)
    assert "300000" in str(info2.value)
    assert list(dest.iterdir()) == []  # the partial download is gone


def test_content_length_over_the_cap_refused_before_the_body(server, tmp_path):
    def huge(h):
        h.send_response(200)
        h.send_header("Content-Length", str(10 ** 10))
        h.end_headers()
        h.wfile.flush()
        h.server.local.stop.wait(10)  # never sends the body: a read would time out
    server.routes["/huge"] = huge
    err = _refused(server.url("/huge"), LOCAL, tmp_path)
    assert (err.status, err.code) == (413, "PAYLOAD_TOO_LARGE")


def test_slow_server_times_out_naming_the_field(server, tmp_path):
    def slow(h):
        h.server.local.stop.wait(10)  # accepts, then says nothing
    server.routes["/slow"] = slow
    policy = FetchPolicy(allow_http=True, trusted_networks=("127.0.0.1/32",),
                         read_timeout_s=0.3, total_timeout_s=5)
    err = _refused(server.url("/slow"), policy, tmp_path)
    assert (err.status, err.code) == (400, "URL_TIMEOUT") and "0.3 s" in err.message


def test_dripping_server_hits_the_total_deadline(server, tmp_path):
    url = server.drip("/drip", b"\0" * 1000, piece=1, every_s=0.05)  # 50 s if nobody stops it
    policy = FetchPolicy(allow_http=True, trusted_networks=("127.0.0.1/32",),
                         read_timeout_s=2, total_timeout_s=0.5)
    err = _refused(url, policy, tmp_path)
    assert err.code == "URL_TIMEOUT" and "total limit 0.5 s" in err.message


def test_errors_never_echo_credentials_or_query_secrets(server, tmp_path, connections):
    err = _refused("https://alice:hunter2@media.example.test/a.png", FetchPolicy(), tmp_path)
    assert err.code == "URL_HAS_CREDENTIALS" and connections == []
    assert "hunter2" not in str(err) and "alice" not in str(err)
    err = _refused(server.url("/private/TOKENPATH.png?X-Amz-Signature=SECRETSIG&t=abc"), LOCAL,
                   tmp_path)
    assert err.code == "URL_FETCH_FAILED" and "404" in err.message
    assert "SECRETSIG" not in str(err) and "TOKENPATH" not in str(err)


def test_server_sending_compressed_body_unasked_is_refused(server, tmp_path):
    def gz(h):
        h.send_response(200)
        h.send_header("Content-Encoding", "gzip")
        h.send_header("Content-Length", "4")
        h.end_headers()
        h.wfile.write(b"\x1f\x8b\x08\x00")
    server.routes["/gz"] = gz
    err = _refused(server.url("/gz"), LOCAL, tmp_path)
    assert err.status == 415 and "gzip" in err.message


@pytest.mark.parametrize("url,code", [
    ("https://example.com/" + "a" * 9000, "URL_TOO_LONG"),
    ("https:///no-host.png", "BAD_URL"),
    ("https://exa mple.com/a.png", "BAD_URL"),
])
def test_malformed_urls_are_400(url, code, tmp_path, connections):
    err = _refused(url, FetchPolicy(), tmp_path)
    assert (err.status, err.code) == (400, code) and connections == []


def test_hung_dns_lookup_ends_at_the_deadline(monkeypatch, tmp_path, connections):
    import time

    def stuck(*args, **kwargs):
        time.sleep(1.5)
        return []
    monkeypatch.setattr(socket, "getaddrinfo", stuck)
    err = _refused("https://media.example.test/a.png", FetchPolicy(total_timeout_s=0.2), tmp_path)
    assert err.code == "URL_TIMEOUT" and "looking up" in err.message and connections == []


def test_empty_body_and_redirect_without_location_are_400(server, tmp_path):
    server.serve("/empty", b"")
    assert _refused(server.url("/empty"), LOCAL, tmp_path).code == "EMPTY_INPUT"

    def no_location(h):
        h.send_response(302)
        h.send_header("Content-Length", "0")
        h.end_headers()
    server.routes["/nowhere"] = no_location
    assert _refused(server.url("/nowhere"), LOCAL, tmp_path).code == "URL_FETCH_FAILED"


def test_redirect_to_an_unparseable_location_is_400(server, tmp_path):
    err = _refused(server.redirect("/bad", "http://[::1"), LOCAL, tmp_path)
    assert (err.status, err.code) == (400, "URL_UNREACHABLE") and "protocol" in err.message
    assert [p for p, _ in server.hits] == ["/bad"]
