"""Issue 21, item 3 and its class: every number a client can send is finite and bounded. JSON's
`1e309` parses as infinity and Python's JSON reader takes `Infinity` and `NaN`; caption times,
face boxes and other floats used to accept them (and `1e308`), and the job then failed inside.

1. A walk over the JSON schema of the API's input (the OpenAPI of RunRequest, and of the finish
   options the API's types are shared with) finds every number field and asserts finite bounds
   on both sides.
2. A property test posts infinities, NaN and values past each bound into every number field
   the walk found, over HTTP, and gets a 400 naming that field, with no job created.
   tests/serve_app/inputs/fuzzing.py says how to run it longer by hand."""
from __future__ import annotations

import json
import math
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import TypeAdapter

from media.options import FinishOptions
from serve_app.schemas import RunRequest
from tests.serve_app.inputs.fuzzing import examples, fuzz_settings
from tests.support.service import BASE, make_client


def _resolve(schema: dict, root: dict) -> dict:
    while "$ref" in schema:
        schema = root["$defs"][schema["$ref"].split("/")[-1]]
    return schema


def number_fields(schema: dict, root: dict | None = None, path: tuple = (),
                  seen: frozenset = frozenset()) -> list[tuple[tuple, dict]]:
    """(path, schema) of every number/integer leaf. Paths: property names, "[]" for an array
    item, "<Model>" for a union member (a discriminated job type)."""
    root = root or schema
    ref = schema.get("$ref")
    if ref in seen:
        return []
    s = _resolve(schema, root)
    seen = seen | {ref} if ref else seen
    out: list[tuple[tuple, dict]] = []
    if s.get("type") in ("number", "integer"):
        out.append((path, s))
    for key in ("anyOf", "oneOf", "allOf"):
        for member in s.get(key, []):
            m = _resolve(member, root)
            tag = (f"<{m.get('title')}>",) if key == "oneOf" else ()
            out += number_fields(member, root, path + tag, seen)
    for name, sub in s.get("properties", {}).items():
        out += number_fields(sub, root, path + (name,), seen)
    if "items" in s:
        out += number_fields(s["items"], root, path + ("[]",), seen)
    for sub in s.get("prefixItems", []):
        out += number_fields(sub, root, path + ("[]",), seen)
    if isinstance(s.get("additionalProperties"), dict):
        out += number_fields(s["additionalProperties"], root, path + ("{}",), seen)
    return out


def _bounds(s: dict) -> tuple[float | None, float | None]:
    lo = s.get("minimum", s.get("exclusiveMinimum"))
    hi = s.get("maximum", s.get("exclusiveMaximum"))
    return lo, hi


def _openapi_run_request() -> dict:
    """RunRequest as the served OpenAPI document publishes it (refs into its components)."""
    from serve_app.api import build_api
    components = build_api().openapi()["components"]["schemas"]
    return {**components["RunRequest"], "$defs": components}


SCHEMAS = {"RunRequest": RunRequest.model_json_schema(),
           "OpenAPI RunRequest": _openapi_run_request(),
           "FinishOptions": TypeAdapter(FinishOptions).json_schema()}


@pytest.mark.parametrize("name", list(SCHEMAS))
def test_every_number_in_the_schema_is_bounded_on_both_sides(name):
    fields = number_fields(SCHEMAS[name])
    assert len(fields) >= (10 if name == "FinishOptions" else 20), fields
    unbounded = [".".join(p) for p, s in fields
                 if None in _bounds(s) or not all(math.isfinite(b) for b in _bounds(s))]
    assert unbounded == [], f"number fields without finite bounds on both sides: {unbounded}"


# --- the property: every number field, over HTTP --------------------------------------------

def _base_bodies(media: dict) -> dict[str, dict]:
    """A valid input per job type with one element in every list holding numbers."""
    return {
        "LipsyncOnlyInput": {"job_type": "lipsync_only", "job_id": "num-1",
                             "image": media["image"], "audio": media["audio"],
                             "face_box": [20, 10, 76, 80]},
        "VideoRenderInput": {"job_type": "video_render", "job_id": "num-2",
                             "image": media["image"], "audio": media["audio"],
                             "face_box": [20, 10, 76, 80],
                             "sfx_tracks": [{"url": media["audio"], "start_time": 0.1}],
                             "captions": [{"text": "hi", "start": 0.0, "end": 0.2}],
                             "caption_style": {}, "format": {"width": 96, "height": 96},
                             "ducking_config": {}},
        "PersonaBuildInput": {"job_type": "persona_build", "persona_id": "num-3",
                              "primary_image": media["image"], "face_box": [20, 10, 76, 80],
                              "takes_to_generate": [{"emotion": "happy"}]},
    }


INPUT_FIELDS = [(p, s) for p, s in number_fields(SCHEMAS["RunRequest"]) if p[0] == "input"]
SENTINEL = "__NUMBER__"


def _place(body: dict, path: tuple, value) -> tuple[dict, str]:
    """The body with `value` at `path` (list items: index 0; a face box: each corner in
    turn is the caller's choice, index 0 here), and the field name an error must give."""
    body = json.loads(json.dumps(body))
    node, name = body, "input"
    for part in path[2:-1]:
        if part == "[]":
            node, name = node[0], name + "[0]"
        else:
            node, name = node.setdefault(part, {}), name + f".{part}"
    last = path[-1]
    if last == "[]":
        node[0], name = value, name + "[0]"
    else:
        node[last], name = value, name + f".{last}"
    return body, name


def _bad_values(s: dict):
    lo, hi = _bounds(s)
    specials = st.sampled_from(["1e309", "-1e309", "Infinity", "-Infinity", "NaN", "1e308",
                                "-1e308", "1" + "0" * 400])
    past = st.one_of(st.floats(min_value=hi, exclude_min=True, allow_nan=False,
                               allow_infinity=False).filter(lambda v: v > hi),
                     st.floats(max_value=lo, exclude_max=True, allow_nan=False,
                               allow_infinity=False).filter(lambda v: v < lo)).map(repr)
    return st.one_of(specials, past)


@pytest.fixture(scope="module")
def client(tmp_path_factory, tiny_media_module):
    from tests.support.service import Sandbox
    root = tmp_path_factory.mktemp("numbers")
    # no slot to run in: were a bad number accepted, the job would only wait
    with make_client(Sandbox(root, root).settings(max_running_jobs=0)) as c:
        yield c


@pytest.fixture(scope="module")
def tiny_media_module(tmp_path_factory):
    from tests.support.media import b64, small_portrait, speechlike
    d = tmp_path_factory.mktemp("num-media")
    return {"image": b64(small_portrait(96)),
            "audio": b64(speechlike(0.3, d / "v.wav").read_bytes())}


def test_the_walk_reaches_every_known_number_field(tiny_media_module):
    for body in _base_bodies(tiny_media_module).values():  # the bodies the property spoils
        RunRequest.model_validate({"input": body})
    names = {".".join(p[2:]) for p, _ in INPUT_FIELDS}
    for want in ("face_box.[]", "captions.[].start", "captions.[].end", "format.fps",
                 "sfx_tracks.[].start_time", "sfx_tracks.[].volume", "caption_style.font_size",
                 "ducking_config.attack_ms", "takes_to_generate.[].intensity",
                 "face_restore_weight"):
        assert want in names, (want, sorted(names))


def test_infinite_nan_and_out_of_range_numbers_are_400_naming_the_field(client,
                                                                        tiny_media_module,
                                                                        figures):
    bodies = _base_bodies(tiny_media_module)
    tried, t0 = [0], time.monotonic()

    @fuzz_settings(examples(800))
    @given(data=st.data())
    def run(data):
        path, schema = data.draw(st.sampled_from(INPUT_FIELDS))
        raw = data.draw(_bad_values(schema))
        body, field = _place(bodies[path[1].strip("<>")], path, SENTINEL)
        text = json.dumps({"input": body}).replace(json.dumps(SENTINEL), raw)
        r = client.post(f"{BASE}/run", content=text,
                        headers={"Content-Type": "application/json"})
        tried[0] += 1
        assert r.status_code == 400, (field, raw, r.status_code, r.text[:300])
        err = r.json()["error"]
        assert err["code"] == "INVALID_INPUT" and field in err["message"], (field, raw, err)
    run()
    assert client.get(f"{BASE}/health").json()["jobs"]["inQueue"] == 0  # nothing was accepted
    figures.count("bad inputs tried", tried[0], "non-finite / out-of-range numbers over HTTP")
    figures.note("numeric fuzz", f"{tried[0]} requests over {len(INPUT_FIELDS)} number fields, "
                 f"{time.monotonic() - t0:.1f} s")


@pytest.mark.parametrize("raw", ["1e309", "Infinity", "NaN", "1e308"])
def test_the_testers_cases(raw, client, tiny_media_module):
    """The report's cases: caption times and a face-box corner."""
    bodies = _base_bodies(tiny_media_module)
    for path, field in ((("input", "<VideoRenderInput>", "captions", "[]", "end"),
                         "input.captions[0].end"),
                        (("input", "<LipsyncOnlyInput>", "face_box", "[]"), "input.face_box[0]")):
        body, name = _place(bodies[path[1].strip("<>")], path, SENTINEL)
        assert name == field
        text = json.dumps({"input": body}).replace(json.dumps(SENTINEL), raw)
        r = client.post(f"{BASE}/run", content=text, headers={"Content-Type": "application/json"})
        assert r.status_code == 400 and field in r.json()["error"]["message"], (raw, r.text[:300])
