"""RunPod's `webhook`: when a job ends (any final status), POST the JSON that `status` returns
for it to the client's URL.

The URL is guarded exactly like an input URL (serve_app/netguard.py: https, public addresses,
connections pinned to the checked addresses, redirects checked again): it is checked when the
job is submitted (a 400 naming `webhook`) and again at every delivery (DNS may change). A
delivery that fails, or gets a 5xx, is retried with backoff (WEBHOOK_BACKOFF_S, about a minute
in all); a 4xx answer is final (the receiver refused it). Deliveries run as their own tasks:
a slow or closed receiver delays no job and no status answer. The outcome is kept in the job
record (`webhook_delivery`) and shown by `status`.

With PF_WEBHOOK_SECRET set, each delivery is signed: the header
`X-PersonaForge-Signature: sha256=<hex>` carries HMAC-SHA256(secret, raw body), so a receiver
recomputes it over the bytes it got and compares in constant time.
"""
from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import json
import logging
import time
from typing import Callable

from core.jobs import JobRecord
from serve_app.netguard import FetchError, FetchPolicy, check_url, post, resolve_checked

log = logging.getLogger("personaforge.webhooks")

SIGNATURE_HEADER = "X-PersonaForge-Signature"
WEBHOOK_BACKOFF_S = (2.0, 4.0, 8.0, 15.0, 30.0)  # between the 6 attempts: ~1 minute in all


def check_webhook(url: str, policy: FetchPolicy) -> str:
    """The webhook URL if the input-URL rules admit it; FetchError (a 4xx) otherwise. An
    address written into the URL is judged now; a host name is resolved and judged at each
    delivery (it may not resolve yet, and may change)."""
    checked = check_url(url, policy)
    host = checked.raw_host.decode("ascii")
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return url
    resolve_checked(host, checked.port or 443, policy, time.monotonic() + 1.0)
    return url


def signature(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class WebhookSender:
    """Delivers each final job's status to its webhook; `status_json(job_id)` gives the body
    (the same JSON the status route answers) and `record_outcome(job_id, outcome)` keeps it."""

    def __init__(self, policy: FetchPolicy, secret: str | None,
                 status_json: Callable[[str], dict | None],
                 record_outcome: Callable[[str, dict], None]):
        self.policy, self.secret = policy, secret
        self.status_json, self.record_outcome = status_json, record_outcome
        self.tasks: set[asyncio.Task] = set()

    def job_ended(self, rec: JobRecord) -> None:
        """Schedule the delivery of a job that just became final (no-op without a webhook)."""
        if not rec.webhook:
            return
        task = asyncio.get_running_loop().create_task(self.deliver(rec.id, rec.webhook),
                                                      name=f"webhook-{rec.id}")
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def deliver(self, job_id: str, url: str) -> dict:
        status = await asyncio.to_thread(self.status_json, job_id)
        body = json.dumps(status, separators=(",", ":")).encode()
        headers = {"Content-Type": "application/json"}
        if self.secret:
            headers[SIGNATURE_HEADER] = signature(self.secret, body)
        outcome: dict = {"state": "failed", "attempts": 0}
        for delay in (*WEBHOOK_BACKOFF_S, None):
            outcome["attempts"] += 1
            try:
                code = await asyncio.to_thread(post, url, body, headers, self.policy)
            except FetchError as e:
                outcome.update(http_status=None, error=f"{e.code}: {e}")
            else:
                outcome.update(http_status=code, error=None)
                if 200 <= code < 300:
                    outcome["state"] = "delivered"
                    break
                if 400 <= code < 500:      # the receiver refused this body: retrying won't help
                    outcome["error"] = f"the receiver answered HTTP {code}"
                    break
                outcome["error"] = f"the receiver answered HTTP {code}"
            if delay is None:
                break
            log.warning("job %s: webhook attempt %d failed (%s); retrying in %.0fs", job_id,
                        outcome["attempts"], outcome["error"], delay)
            await asyncio.sleep(delay)
        try:
            await asyncio.to_thread(self.record_outcome, job_id, outcome)
        except Exception as e:  # noqa: BLE001 - the delivery happened; only its note is lost
            log.warning("job %s: webhook outcome not recorded (%s)", job_id, type(e).__name__)
        return outcome

