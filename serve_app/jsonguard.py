"""Request bodies parsed without letting their shape stall the ingress.

A body inside the byte limit can still be costly to turn into Python objects: millions of tiny
keys or deeply nested arrays in a free-form field made the parser build millions of objects on
the event loop that also answers /health. So every JSON body is first measured by its structure
(nesting depth, members), which costs time in the number of structural characters only: long
strings (base64 media) are skipped in C by the regular expression, never walked in Python. A
body over the bounds is refused with a 400 naming the bound; one within them is parsed in a
worker thread, off the event loop.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

# Structural characters outside strings (a quote opens one).
_STRUCTURE = re.compile(rb'["{}\[\]:,]')


@dataclass(frozen=True)
class JsonBounds:
    max_depth: int = 16           # our deepest legitimate body: input.captions[i] ~ 4 levels
    max_members: int = 20_000     # keys + array items: 500 captions x 4 + 64 SFX x 4 + ... ~ 3k


class JsonTooComplex(ValueError):
    def __init__(self, message: str, code: str = "JSON_TOO_COMPLEX"):
        super().__init__(message)
        self.code = code


def measure(body: bytes, bounds: JsonBounds = JsonBounds()) -> tuple[int, int]:
    """(deepest nesting, members) of a JSON text, stopping at the first bound crossed
    (JsonTooComplex). Malformed text is not judged here: the parser reports it.

    Strings are jumped over with bytes.find (memchr: a 100 MB base64 string costs milliseconds
    and hands the GIL back between calls), never matched character by character."""
    depth = deepest = members = 0
    pos, end = 0, len(body)
    while pos < end:
        match = _STRUCTURE.search(body, pos)
        if match is None:
            break
        i, char = match.start(), body[match.start()]
        pos = i + 1
        if char == 0x22:                    # a string: find its closing, unescaped quote
            pos = _string_end(body, pos)
        elif char in (0x7B, 0x5B):          # { [
            depth += 1
            deepest = max(deepest, depth)
            if depth > bounds.max_depth:
                raise JsonTooComplex(f"the body nests deeper than {bounds.max_depth} levels")
        elif char in (0x7D, 0x5D):          # } ]
            depth -= 1
        else:                               # : (a key) or , (one more member)
            members += 1
            if members > bounds.max_members:
                raise JsonTooComplex(f"the body has more than {bounds.max_members} keys and "
                                     "array items")
    return deepest, members


def _string_end(body: bytes, start: int) -> int:
    """The index after the quote that closes the string starting at `start` (the end of the
    text if it never closes: the parser will say so)."""
    while True:
        quote = body.find(b'"', start)
        if quote < 0:
            return len(body)
        backslashes = 0
        while body[quote - 1 - backslashes] == 0x5C:
            backslashes += 1
        if backslashes % 2 == 0:            # not escaped
            return quote + 1
        start = quote + 1


def parse(body: bytes, bounds: JsonBounds = JsonBounds()) -> Any:
    """The parsed body once its structure is within bounds (JsonTooComplex otherwise; a
    json.JSONDecodeError for text that is not JSON). Meant to run in a worker thread."""
    measure(body, bounds)
    return json.loads(body)
