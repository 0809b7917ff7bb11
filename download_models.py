"""Fill the models volume of a production GPU host with the weights in weights/registry.py.

    python download_models.py                          # commercial-safe set, LatentSync 1.5 and 1.6
    python download_models.py --all                    # the same, said explicitly (the seed's set-up)
    python download_models.py --only lipsync --version 1.6
    python download_models.py --only takes             # LivePortrait's five files (persona takes)
    python download_models.py --non-commercial         # also InsightFace buffalo_l (research only)
    python download_models.py --verify                 # re-hash present files against models.lock.json
    python download_models.py --list                   # what exists, sizes, licences, sources

Exit status: 0 when every selected file is present and checked, 1 when any failed, 2 on bad usage.
"""
from __future__ import annotations

import argparse
import os
import sys

from weights import registry
from weights.download import LOCK_NAME, DownloadOptions, ensure_weights, expected_bytes
from weights.fetch import DownloadError, FetchOptions, human_size

DEFAULT_MODELS_DIR = "/workspace/models"


def build_parser() -> argparse.ArgumentParser:
    # allow_abbrev off: no flag may be reached by a prefix (a typo must not hit a hidden one)
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    p.add_argument("--models-dir", default=os.environ.get("PF_MODELS_DIR", DEFAULT_MODELS_DIR),
                   help="where the weights go (default: $PF_MODELS_DIR or %(default)s)")
    p.add_argument("--all", action="store_true",
                   help="every commercial-safe file of every group and LatentSync version (the "
                   "default selection; cannot be combined with --only or --version)")
    p.add_argument("--only", choices=(*registry.GROUPS, "all"), default=None,
                   help="one group (default: all)")
    p.add_argument("--version", choices=(*registry.VERSIONS, "both"), default=None,
                   help="LatentSync UNet version(s) to fetch (default: both)")
    p.add_argument("--non-commercial", action="store_true",
                   help="also fetch weights whose licence forbids commercial use (InsightFace buffalo_l)")
    p.add_argument("--skip-present", action=argparse.BooleanOptionalAction, default=True,
                   help="keep files already in place and valid (default: on)")
    p.add_argument("--verify", action="store_true", help="re-hash present files against " + LOCK_NAME)
    p.add_argument("--list", action="store_true", help="print the registry and exit")
    p.add_argument("--dry-run", action="store_true", help="say what would be fetched; write nothing")
    p.add_argument("--retries", type=int, default=4, help="extra attempts per URL (default: %(default)s)")
    p.add_argument("--timeout", type=float, default=60.0, help="socket timeout in seconds")
    # Tests only: lets the downloader talk plain http to a server on 127.0.0.1.
    p.add_argument("--allow-http-localhost", action="store_true", help=argparse.SUPPRESS)
    return p


def print_registry(out=sys.stdout) -> None:
    print(f"{'NAME':22} {'GROUP':8} {'SIZE':>10}  {'COMMERCIAL':10} {'SHA256':9} PATH", file=out)
    for w in registry.REGISTRY:
        size = ("" if w.size_bytes else "~") + human_size(expected_bytes(w))
        commercial = "yes" if w.commercial_ok else "NO"
        sha = "published" if w.sha256 else "TOFU"
        where = f"(bundled) {w.path}" if w.bundled else w.path
        print(f"{w.name:22} {w.group:8} {size:>10}  {commercial:10} {sha:9} {where}", file=out)
        print(f"    licence: {w.licence}", file=out)
        for s in w.sources:
            extra = f" [member {s.member}]" if s.member else ""
            print(f"    source:  {s.url}{extra}" + (f" ({s.note})" if s.note else ""), file=out)
    print("\nTOFU: no sha256 published upstream; the first download is recorded in "
          f"{LOCK_NAME} and --verify checks against it. Sizes with ~ are approximate.", file=out)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.all and (args.only or args.version):
        parser.error("--all already means every group and version; drop --only/--version")
    args.only, args.version = args.only or "all", args.version or "both"
    try:
        registry.validate(registry.REGISTRY, allow_http_localhost=args.allow_http_localhost)
    except ValueError as exc:
        print(f"error: broken weights registry: {exc}", file=sys.stderr)
        return 1
    if args.list:
        print_registry()
        return 0
    entries = registry.select(args.only, args.version, args.non_commercial, include_bundled=True)
    options = DownloadOptions(
        fetch=FetchOptions(timeout_s=args.timeout, retries=args.retries,
                           allow_http_localhost=args.allow_http_localhost),
        skip_present=args.skip_present, verify=args.verify, dry_run=args.dry_run)
    print(f"models dir: {args.models_dir}  (--only {args.only} --version {args.version}"
          f"{' --non-commercial' if args.non_commercial else ''})", flush=True)
    try:
        results = ensure_weights(args.models_dir, entries, options,
                                 log=lambda line: print(line, flush=True))
    except DownloadError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print("\nsummary:")
    for r in results:
        print(f"  {r.action:10} {r.name:22} {r.message.splitlines()[0] if r.message else ''}")
    planned = [e for e, r in zip(entries, results) if r.action == "planned"]
    if planned:
        total = sum(expected_bytes(e) or 0 for e in planned)
        print(f"\ndry run: {len(planned)} file(s) to download, about {human_size(total)}")
    failed = [r for r in results if not r.ok]
    if failed:
        print(f"\nerror: {len(failed)} file(s) failed:", file=sys.stderr)
        for r in failed:
            print(f"  {r.name} ({r.path}): {r.message}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
