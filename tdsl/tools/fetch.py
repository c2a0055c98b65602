"""`tdsl fetch hf|github`: download a model package, verify it, load it and move it into place.

A thin layer over `tdsl.publish.hf.fetch_hf` / `tdsl.publish.github.fetch_github` and
`tdsl.publish.fetch.fetch_and_load`, which loads what it downloaded (as `tdsl.load` does:
config, the weights' SHA-256, the tensors against the rebuilt program) before moving it into
place. A summary goes to stderr, the package's path to stdout.

Tokens: `--token`, else HF_TOKEN / the Hub login, or GITHUB_TOKEN; prefer the environment,
since a command-line argument is visible to other users of the machine. Never printed.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Callable

from tdsl.tools.common import add_force_arg, add_remote_args, command_main
from tdsl.tools.publish import GITHUB_URL_HELP, HF_TOKEN, HF_URL_HELP


def add_parser(sub: Any) -> None:
    fetch = sub.add_parser("fetch", help="download a model package, verify it and load it")
    sources = fetch.add_subparsers(dest="source", required=True)

    p = sources.add_parser("hf", help="download from the Hugging Face Hub")
    p.add_argument("repo_id", help="OWNER/NAME on the Hub")
    p.add_argument("-o", "--output", required=True, metavar="DIR", help="the package lands in DIR/NAME")
    p.add_argument("--revision", help="branch, tag or commit (default main)")
    add_remote_args(p, HF_TOKEN, "--endpoint", HF_URL_HELP)
    add_force_arg(p)
    p.set_defaults(func=cmd_fetch_hf)

    p = sources.add_parser("github", help="download a release, verify SHA256SUMS, extract safely")
    p.add_argument("owner_repo", metavar="OWNER/REPO")
    p.add_argument("--tag", required=True, help="release tag")
    p.add_argument("-o", "--output", required=True, metavar="DIR", help="the package lands in DIR/NAME")
    add_remote_args(p, "GITHUB_TOKEN", "--base-url", GITHUB_URL_HELP)
    add_force_arg(p)
    p.set_defaults(func=cmd_fetch_github)


def cmd_fetch_hf(args: argparse.Namespace) -> int:
    from tdsl.publish.hf import fetch_hf

    _fetch_and_report(lambda dest: fetch_hf(args.repo_id, dest, revision=args.revision, token=args.token,
                                            endpoint=args.url), args.output, force=args.force)
    return 0


def cmd_fetch_github(args: argparse.Namespace) -> int:
    from tdsl.publish.github import fetch_github

    _fetch_and_report(lambda dest: fetch_github(args.owner_repo, args.tag, dest, token=args.token,
                                                base_url=args.url),
                      args.output, force=args.force, verified="verified against SHA256SUMS")
    return 0


def _fetch_and_report(fetch: Callable[[Path], Path], output: str, force: bool, verified: str | None = None) -> Path:
    """`fetch_and_load`, then the summary on stderr and the package path on stdout."""
    from tdsl.publish.fetch import fetch_and_load, package_summary

    pkg = fetch_and_load(fetch, output, overwrite=force)
    if verified:
        print(f"{verified}: {pkg.path}", file=sys.stderr)
    for line in package_summary(pkg):
        print(line, file=sys.stderr)
    print(pkg.path)
    return pkg.path


def main(argv: list[str] | None = None) -> int:
    return command_main(add_parser, argv)


if __name__ == "__main__":
    sys.exit(main())
