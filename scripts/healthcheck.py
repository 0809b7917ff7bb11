"""The image's HEALTHCHECK: exit 0 when this container's Serve proxy answers /-/healthz with 200.

The proxy's own route, not the API's: it needs no endpoint id or key, and it answers once the
proxy is up whatever the replicas are doing (their health is Serve's business). PF_HEALTHCHECK_URL
overrides the address (tests; a proxy on another port).
"""
from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request

DEFAULT_URL = "http://127.0.0.1:8000/-/healthz"


def check(url: str, timeout: float = 5.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 (our own URL)
            return resp.status == 200
    except (urllib.error.URLError, OSError):
        # Refused, timed out or an HTTP error status (HTTPError is a URLError): unhealthy.
        return False


def main() -> int:
    url = os.environ.get("PF_HEALTHCHECK_URL", DEFAULT_URL)
    if check(url):
        return 0
    print(f"unhealthy: no 200 from {url}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
