"""`tdsl publish hf|github` and `tdsl fetch hf|github`: thin argparse wrappers over the library.

Tokens: `--token`, else HF_TOKEN / the Hub login, or GITHUB_TOKEN; prefer the environment,
since a command-line argument is visible to other users of the machine. Never printed.
"""
from __future__ import annotations

import argparse
import sys
from typing import Any


def add_publish_parsers(sub: Any) -> None:
    """Register `publish` and `fetch` on the `tdsl` subcommand set."""
    publish = sub.add_parser("publish", help="upload a model package to the Hugging Face Hub or a GitHub release")
    targets = publish.add_subparsers(dest="target", required=True)

    p = targets.add_parser("hf", help="upload to a Hugging Face Hub model repo in one commit")
    p.add_argument("repo_id", help="OWNER/NAME on the Hub (created if missing)")
    p.add_argument("package_dir", help="the model package folder")
    p.add_argument("--private", action="store_true", help="create the repo as private")
    p.add_argument("--revision", help="branch to commit to (created if missing; default main)")
    p.add_argument("--message", help="commit message")
    _add_common(p, "HF_TOKEN or the `hf auth login` token", "--endpoint", "Hub URL (default: HF_ENDPOINT or huggingface.co)")
    p.add_argument("--onnx", metavar="FILE", help="also upload this ONNX export")
    p.set_defaults(func=cmd_publish_hf)

    p = targets.add_parser("github", help="attach to a GitHub release: .tar.gz, SHA256SUMS, ONNX")
    p.add_argument("owner_repo", metavar="OWNER/REPO")
    p.add_argument("package_dir", help="the model package folder")
    p.add_argument("--tag", required=True, help="release tag (the release is created if missing)")
    p.add_argument("--notes", help="release notes (the checksums are appended)")
    p.add_argument("--draft", action="store_true", help="leave the release as a draft")
    _add_common(p, "GITHUB_TOKEN", "--base-url", "API URL (default https://api.github.com)")
    p.add_argument("--onnx", metavar="FILE", help="also attach this ONNX export")
    p.set_defaults(func=cmd_publish_github)

    fetch = sub.add_parser("fetch", help="download a model package and verify it")
    sources = fetch.add_subparsers(dest="source", required=True)

    p = sources.add_parser("hf", help="download from the Hugging Face Hub")
    p.add_argument("repo_id", help="OWNER/NAME on the Hub")
    p.add_argument("-o", "--output", required=True, metavar="DIR", help="the package lands in DIR/NAME")
    p.add_argument("--revision", help="branch, tag or commit (default main)")
    _add_common(p, "HF_TOKEN or the `hf auth login` token", "--endpoint", "Hub URL (default: HF_ENDPOINT or huggingface.co)")
    p.set_defaults(func=cmd_fetch_hf)

    p = sources.add_parser("github", help="download a release, verify SHA256SUMS, extract safely")
    p.add_argument("owner_repo", metavar="OWNER/REPO")
    p.add_argument("--tag", required=True, help="release tag")
    p.add_argument("-o", "--output", required=True, metavar="DIR", help="the package lands in DIR/NAME")
    _add_common(p, "GITHUB_TOKEN", "--base-url", "API URL (default https://api.github.com)")
    p.set_defaults(func=cmd_fetch_github)


def _add_common(p: argparse.ArgumentParser, token_env: str, url_flag: str, url_help: str) -> None:
    p.add_argument("--token", help=f"access token (default: {token_env}; prefer the environment)")
    p.add_argument(url_flag, dest="url", help=url_help)


def cmd_publish_hf(args: argparse.Namespace) -> int:
    from tdsl.publish.hf import publish_hf

    commit = publish_hf(args.package_dir, args.repo_id, private=args.private, revision=args.revision,
                        message=args.message, token=args.token, extra_files=[args.onnx] if args.onnx else [],
                        endpoint=args.url)
    print(f"committed {len(commit.files)} files to {args.repo_id}: {commit.url}")
    return 0


def cmd_publish_github(args: argparse.Namespace) -> int:
    from tdsl.publish.github import publish_github

    result = publish_github(args.package_dir, args.owner_repo, args.tag, notes=args.notes, draft=args.draft,
                            token=args.token, extra_files=[args.onnx] if args.onnx else [], base_url=args.url)
    for name in sorted(result.sums):
        state = ("uploaded" if name in result.uploaded else "replaced" if name in result.replaced
                 else "unchanged")
        print(f"{result.sums[name]}  {name}  ({state})")
    print(f"{'draft' if result.draft else 'release'} {args.tag}: {result.url}")
    return 0


def cmd_fetch_hf(args: argparse.Namespace) -> int:
    from tdsl.publish.hf import fetch_hf

    path = fetch_hf(args.repo_id, args.output, revision=args.revision, token=args.token, endpoint=args.url)
    print(path)
    return 0


def cmd_fetch_github(args: argparse.Namespace) -> int:
    from tdsl.publish.github import fetch_github

    path = fetch_github(args.owner_repo, args.tag, args.output, token=args.token, base_url=args.url)
    print(f"verified against SHA256SUMS: {path}", file=sys.stderr)
    print(path)
    return 0
