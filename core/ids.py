"""Client-given names (`job_id`, `persona_id`, `take_id`) checked before they touch a path or key."""
from __future__ import annotations

import re

MAX_ID_LEN = 128
_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]*")


def check_id(value: object, field: str) -> str:
    """Return `value` if it is a safe id, else raise ValueError naming `field` and the rule.

    Safe: ASCII letters, digits, `_`, `-`, `.`; starts with a letter or digit; no `..`;
    at most 128 characters. So it can never be a path, a traversal or a key prefix trick.
    """
    if not isinstance(value, str):
        raise ValueError(f"{field} must be a string")
    if not value:
        raise ValueError(f"{field} must not be empty")
    if len(value) > MAX_ID_LEN:
        raise ValueError(f"{field} is longer than {MAX_ID_LEN} characters")
    if not _ID_RE.fullmatch(value) or ".." in value:
        raise ValueError(
            f"{field} may use only letters, digits, '_', '-' and '.', must start with a letter "
            "or digit and must not contain '..'")
    return value
