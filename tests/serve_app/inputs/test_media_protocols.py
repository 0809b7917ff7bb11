"""Media that would make ffprobe/ffmpeg open other URLs (SSRF through the decoder): playlists,
manifests, session descriptions and concat lists behind an ID3 tag pass the magic-byte check
as "MP3" and reach ffprobe. Sent as `audio` (over a URL and as base64) they are refused with
a 4xx naming the field, and a listener they point at never hears from us."""
from __future__ import annotations

import select
import socket
import threading

import pytest
from fastapi.testclient import TestClient

from media.ffmpeg import MediaError, probe
from serve_app.api import build_api
from serve_app.inprocess import build_service
from serve_app.inputs import FetchPolicy
from tests.support.media import b64, small_portrait
from tests.support.service import BASE, TINY_FACE_BOX, Sandbox

ID3 = b"ID3\x03\x00\x00\x00\x00\x00\x00"  # an empty ID3v2 tag: sniffs as MP3, ffmpeg skips it


class Listener:
    """TCP and UDP on 127.0.0.1 that record whatever reaches them."""

    def __init__(self):
        self.tcp = socket.create_server(("127.0.0.1", 0))
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind(("127.0.0.1", 0))
        self.tcp_port, self.udp_port = self.tcp.getsockname()[1], self.udp.getsockname()[1]
        self.accepted: list[tuple] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self):
        while True:
            try:
                conn, peer = self.tcp.accept()
            except OSError:
                return
            self.accepted.append(peer)
            conn.close()

    def datagrams(self) -> int:
        n = 0
        while select.select([self.udp], [], [], 0.2)[0]:
            self.udp.recv(65536)
            n += 1
        return n

    def close(self):
        self.tcp.close()
        self.udp.close()


@pytest.fixture
def listener():
    lis = Listener()
    yield lis
    lis.close()


def crafted(listener: Listener) -> dict[str, bytes]:
    url = f"http://127.0.0.1:{listener.tcp_port}"
    return {
        "hls playlist": ID3 + (f"#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:10,\n{url}/seg.ts\n"
                               "#EXT-X-ENDLIST\n").encode(),
        "hls master": ID3 + f"#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1\n{url}/v.m3u8\n".encode(),
        "hls, no tag": (f"#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:10,\n{url}/a.ts\n"
                        "#EXT-X-ENDLIST\n").encode(),
        # no ENDLIST: a live playlist, which ffprobe would keep reloading
        "live hls": ID3 + f"#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:10,\n{url}/l.ts\n".encode(),
        "dash manifest": ID3 + (
            '<?xml version="1.0"?><MPD xmlns="urn:mpeg:dash:schema:mpd:2011" type="static" '
            'profiles="urn:mpeg:dash:profile:isoff-on-demand:2011" '
            'mediaPresentationDuration="PT10S"><Period><AdaptationSet mimeType="audio/mp4">'
            f'<Representation id="1" bandwidth="1"><BaseURL>{url}/a.mp4</BaseURL>'
            "</Representation></AdaptationSet></Period></MPD>").encode(),
        "sdp (rtp/udp)": ID3 + (
            "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=x\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
            f"m=audio {listener.udp_port} RTP/AVP 0\r\na=rtcp:{listener.tcp_port}\r\n").encode(),
        "concat list": ID3 + f"ffconcat version 1.0\nfile '{url}/a.wav'\n".encode(),
    }


def test_crafted_media_never_reaches_the_network(server, listener, tmp_path):
    files = crafted(listener)
    image = b64(small_portrait(96))
    app = build_api()
    # inputs only: no stages, as no job may get far enough to run
    app.state.service = build_service(Sandbox(tmp_path, tmp_path).settings(), stages={})
    app.state.service.policy = FetchPolicy(allow_http=True, trusted_networks=("127.0.0.1/32",))
    with TestClient(app) as c:
        for i, (name, data) in enumerate(files.items()):
            for how, value in (("url", server.serve(f"/voice{i}.mp3", data, "audio/mpeg")),
                               ("base64", b64(data))):
                job = {"job_type": "lipsync_only", "job_id": f"crafted-{i}-{how}",
                       "image": image, "audio": value, "face_box": TINY_FACE_BOX}
                r = c.post(f"{BASE}/run", json={"input": job})
                assert r.status_code == 415, (name, how, r.status_code, r.text)
                err = r.json()["error"]
                assert err["code"] == "UNSUPPORTED_AUDIO_FORMAT", (name, how, err)
                assert err["message"].startswith("input.audio"), (name, err)
    assert listener.accepted == [] and listener.datagrams() == 0
    # the file server saw the crafted files only, never a segment they name
    assert sorted(p for p, _ in server.hits) == sorted(f"/voice{i}.mp3" for i in range(len(files)))


def test_probe_opens_local_files_only(listener, tmp_path):
    """Even with every demuxer allowed, our protocol whitelist (not only ffmpeg's default for
    nested opens, 'file,crypto,data') is in force: what a crafted file names is refused."""
    files = crafted(listener)
    for name in ("hls playlist", "hls master", "hls, no tag", "dash manifest", "sdp (rtp/udp)"):
        path = tmp_path / "x.part"
        path.write_bytes(files[name])
        with pytest.raises(MediaError) as info:
            probe(path)
        assert "not on whitelist 'file'!" in info.value.stderr, (name, info.value.stderr)
    assert listener.accepted == [] and listener.datagrams() == 0
