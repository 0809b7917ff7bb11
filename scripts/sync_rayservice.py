"""Copy serve_config.yaml into deploy/kuberay/rayservice.yaml's `serveConfigV2` block.

    python scripts/sync_rayservice.py           # rewrite the block
    python scripts/sync_rayservice.py --check   # exit 1 when the block differs from the file

serve_config.yaml stays the one file people edit (`serve deploy` reads it on a Ray cluster);
KubeRay takes the same YAML as a string, so the block is the file verbatim, comments included,
and tests/deploy compares the two after parsing.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SERVE_CONFIG = ROOT / "serve_config.yaml"
RAYSERVICE = ROOT / "deploy" / "kuberay" / "rayservice.yaml"
KEY = "  serveConfigV2: |"
INDENT = "    "


def render(manifest: str, serve_config: str) -> str:
    """The manifest with its serveConfigV2 block replaced by serve_config, indented under the key."""
    lines = manifest.splitlines(keepends=True)
    try:
        start = next(i for i, line in enumerate(lines) if line.rstrip("\n") == KEY)
    except StopIteration:
        raise ValueError(f"no line {KEY!r} in the manifest") from None
    end = start + 1
    # The block runs until the first non-blank line indented less than its content.
    while end < len(lines) and (not lines[end].strip() or lines[end].startswith(INDENT)):
        end += 1
    body = [(INDENT + line if line.strip() else "\n") for line in serve_config.splitlines(keepends=True)]
    if body and not body[-1].endswith("\n"):
        body[-1] += "\n"
    return "".join(lines[:start + 1] + body + lines[end:])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--check", action="store_true", help="only say whether the block is up to date")
    p.add_argument("--serve-config", type=Path, default=SERVE_CONFIG)
    p.add_argument("--manifest", type=Path, default=RAYSERVICE)
    args = p.parse_args(argv)
    current = args.manifest.read_text()
    wanted = render(current, args.serve_config.read_text())
    if current == wanted:
        return 0
    if args.check:
        print(f"{args.manifest} is out of date: run python scripts/sync_rayservice.py", file=sys.stderr)
        return 1
    args.manifest.write_text(wanted)
    print(f"updated serveConfigV2 in {args.manifest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
