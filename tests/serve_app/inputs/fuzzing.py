"""Settings shared by the hypothesis fuzz tests (URL guard, media decoders, numeric schema).

In CI every fuzz test runs a fixed, bounded set of examples (derandomize=True: the same
examples on every run, no example database), so it takes seconds and never flakes. By hand,
run longer and with fresh examples:

    PF_FUZZ_EXAMPLES=5000 PF_FUZZ_RANDOM=1 python -m pytest -q -p no:cacheprovider \
        tests/serve_app/inputs/test_url_fuzz.py tests/serve_app/inputs/test_decoder_fuzz.py \
        tests/hardening/test_numeric_bounds.py

PF_FUZZ_EXAMPLES sets max_examples of every fuzz test (default: each test's own CI count);
PF_FUZZ_RANDOM=1 drops derandomize, so each run draws new examples (hypothesis prints the
seed of a failing one: re-run it with @hypothesis.seed or --hypothesis-seed).
"""
from __future__ import annotations

import os

from hypothesis import HealthCheck, settings


def examples(ci_default: int) -> int:
    """How many examples a fuzz test runs: its CI default, or PF_FUZZ_EXAMPLES."""
    return int(os.environ.get("PF_FUZZ_EXAMPLES") or ci_default)


def fuzz_settings(ci_default: int) -> settings:
    return settings(max_examples=examples(ci_default),
                    derandomize=os.environ.get("PF_FUZZ_RANDOM") != "1", database=None,
                    deadline=None, print_blob=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture,
                                           HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.filter_too_much])
