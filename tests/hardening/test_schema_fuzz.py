"""Schemathesis over our own OpenAPI spec, against the in-process ASGI app: valid and invalid
requests generated for every operation (bounded, derandomized, no example database), checking
that nothing answers 5xx and that every response matches the schema (status codes, bodies,
content types, headers). URLs in generated media fields can only point at 127.0.0.1, which
the fetch policy refuses, so nothing reaches the network."""
from __future__ import annotations

from collections import Counter

import hypothesis
import pytest
import schemathesis
from hypothesis import HealthCheck
from schemathesis import GenerationMode
from schemathesis.checks import (content_type_conformance, not_a_server_error,
                                 response_headers_conformance, response_schema_conformance,
                                 status_code_conformance)

from serve_app.api import build_api
from serve_app.inputs import FetchPolicy
from tests.support.service import Sandbox, watched_service

MAX_EXAMPLES = 25
SEEN: Counter = Counter()  # (operation, status) of every generated request
CHECKS = [not_a_server_error, status_code_conformance, response_schema_conformance,
          content_type_conformance, response_headers_conformance]


# The schema is read from the app at import (schemathesis' lazy fixture loader does not work
# with this pytest); the service behind the app is bound per module run, in tmp dirs.
app = build_api()
schema = schemathesis.openapi.from_asgi("/openapi.json", app)
schema.config.generation.update(modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE],
                                max_examples=MAX_EXAMPLES, deterministic=True, database="none")


@pytest.fixture(scope="module", autouse=True)
def bound_service(tmp_path_factory, figures):
    root = tmp_path_factory.mktemp("fuzz")
    settings = Sandbox(root, root).settings(max_request_bytes=2 * 1024 * 1024,
                                            max_queued_jobs=1000)
    service = watched_service(settings)
    service.policy = FetchPolicy(allowed_hosts=("127.0.0.1",))  # and private: refused
    app.state.service = service
    yield service
    app.state.service = None
    by_status = Counter(status for (_, status) in SEEN.elements())
    figures.count("bad inputs tried", sum(n for s, n in by_status.items() if 400 <= s < 500),
                  "schemathesis requests answered 4xx")
    figures.note("schemathesis", f"{schemathesis.__version__}: {sum(SEEN.values())} generated "
                 f"requests over {len({op for op, _ in SEEN})} operations; statuses "
                 f"{dict(sorted(by_status.items()))}")


@pytest.mark.slow
@schema.parametrize()
@hypothesis.settings(max_examples=MAX_EXAMPLES, derandomize=True, database=None, deadline=None,
                     suppress_health_check=list(HealthCheck))
def test_api_conforms_to_its_schema(case):
    response = case.call_and_validate(checks=CHECKS)
    SEEN[(case.operation.label, response.status_code)] += 1
