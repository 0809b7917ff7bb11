"""Bodies whose shape would stall the ingress are refused before they are parsed: nesting and
member counts are measured (strings skipped at memchr speed), over-bound bodies get a 400 naming
the bound, and a legitimate body is parsed off the event loop. The measure is checked against
the parsed structure of generated JSON (hypothesis, fixed seed; PF_FUZZ_EXAMPLES raises it)."""
from __future__ import annotations

import json
import os
import time

from fastapi.testclient import TestClient
from hypothesis import given, settings as hsettings, strategies as st

from serve_app.api import build_api
from serve_app.inprocess import build_service
from serve_app.jsonguard import JsonBounds, JsonTooComplex, measure

BASE = "/v2/local"
EXAMPLES = int(os.environ.get("PF_FUZZ_EXAMPLES", "300"))

text = st.text(alphabet=st.characters(codec="utf-8"), max_size=12) | st.sampled_from(
    ['"', "\\", "\\\"", "{", "}", "[", "]", ":", ",", 'a"b', "\\\\", "x\\"])
values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | text,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(text, children, max_size=4),
    max_leaves=30)


def shape(value) -> tuple[int, int]:
    """(depth, members) as the measure counts them: members are keys, plus the commas between
    array items (n items -> n - 1 separators + nothing for the first)."""
    if isinstance(value, dict):
        inner = [shape(v) for v in value.values()]
        members = len(value) + max(len(value) - 1, 0) + sum(m for _, m in inner)
        return 1 + max((d for d, _ in inner), default=0), members
    if isinstance(value, list):
        inner = [shape(v) for v in value]
        members = max(len(value) - 1, 0) + sum(m for _, m in inner)
        return 1 + max((d for d, _ in inner), default=0), members
    return 0, 0


@hsettings(max_examples=EXAMPLES, derandomize=True, deadline=None)
@given(values, st.booleans())
def test_measure_matches_the_parsed_structure(value, indent):
    body = json.dumps(value, indent=2 if indent else None, ensure_ascii=not indent).encode()
    assert measure(body, JsonBounds(max_depth=10**6, max_members=10**9)) == shape(value)


def test_bounds_are_enforced_and_media_strings_cost_nothing():
    big = json.dumps({"input": {"image": "QUJD" * 25_000_000}}).encode()    # 100 MB of base64
    t0 = time.monotonic()
    assert measure(big) == (2, 2)
    assert time.monotonic() - t0 < 5    # a hang guard: it is memchr work, ~10 ms here
    deep = b"[" * 40 + b"]" * 40
    try:
        measure(deep)
    except JsonTooComplex as e:
        assert "16 levels" in str(e)
    else:
        raise AssertionError("40 levels passed")


def test_amplifying_bodies_are_refused_with_400_and_a_legit_one_still_runs(settings, figures):
    app = build_api()
    app.state.service = build_service(settings)
    keys = ",".join(f'"k{i}":0' for i in range(300_000))
    bomb = ('{"input": {"job_type": "lipsync_only", "job_id": "j", "image": "x", "audio": "y"},'
            ' "policy": {' + keys + "}}").encode()
    nested = ('{"input": ' + "[" * 500 + "]" * 500 + "}").encode()
    with TestClient(app) as c:
        for body, bound in ((bomb, "20000 keys"), (nested, "16 levels")):
            r = c.post(f"{BASE}/run", content=body, headers={"Content-Type": "application/json"})
            assert r.status_code == 400, r.text[:300]
            err = r.json()["error"]
            assert err["code"] == "JSON_TOO_COMPLEX" and bound in err["message"]
        assert c.get(f"{BASE}/health").status_code == 200
        # not JSON, or not even UTF-8: FastAPI's own 400, in our shape
        for junk in (b"{not json", b"\x80", b'{"input": "\xff\xfe"}'):
            r = c.post(f"{BASE}/run", content=junk, headers={"Content-Type": "application/json"})
            assert r.status_code == 400 and r.json()["error"]["code"] in ("INVALID_INPUT", "BAD_REQUEST"), junk
        # a legitimate body goes through the guard unharmed (refused later for its own reason)
        r = c.post(f"{BASE}/run", json={"input": {"job_type": "lipsync_only", "job_id": "ok",
                                                  "image": "x", "audio": "y", "quality": "ultra"}})
        assert r.status_code == 400 and "quality" in r.json()["error"]["message"]
    figures.count("bad inputs tried", 2, "amplifying JSON bodies")
