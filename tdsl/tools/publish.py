"""`tdsl publish hf|github`: upload a model package to the Hugging Face Hub or a GitHub release.

A thin layer over `tdsl.publish.hf.publish_hf` and `tdsl.publish.github.publish_github`;
`--with-onnx` also uploads a fresh ONNX export of the package (`tdsl.publish.onnx`).

Tokens: `--token`, else HF_TOKEN / the Hub login, or GITHUB_TOKEN; prefer the environment,
since a command-line argument is visible to other users of the machine. Never printed.
"""
from __future__ import annotations

import argparse
import sys
from contextlib import contextmanager
from typing import Any, Iterator

from tdsl.tools.common import add_remote_args, command_main

HF_TOKEN = "HF_TOKEN or the `hf auth login` token"
HF_URL_HELP = "Hub URL (default: HF_ENDPOINT or huggingface.co)"
GITHUB_URL_HELP = "API URL (default https://api.github.com)"


def add_parser(sub: Any) -> None:
    publish = sub.add_parser("publish", help="upload a model package to the Hugging Face Hub or a GitHub release")
    targets = publish.add_subparsers(dest="target", required=True)

    p = targets.add_parser("hf", help="upload to a Hugging Face Hub model repo in one commit")
    p.add_argument("repo_id", help="OWNER/NAME on the Hub (created if missing)")
    p.add_argument("package_dir", help="the model package folder")
    p.add_argument("--private", action="store_true", help="create the repo as private")
    p.add_argument("--revision", help="branch to commit to (created if missing; default main)")
    p.add_argument("--message", help="commit message")
    add_remote_args(p, HF_TOKEN, "--endpoint", HF_URL_HELP)
    _add_onnx(p, "upload")
    p.set_defaults(func=cmd_publish_hf)

    p = targets.add_parser("github", help="attach to a GitHub release: .tar.gz, SHA256SUMS, ONNX")
    p.add_argument("owner_repo", metavar="OWNER/REPO")
    p.add_argument("package_dir", help="the model package folder")
    p.add_argument("--tag", required=True, help="release tag (the release is created if missing)")
    p.add_argument("--notes", help="release notes (the checksums are appended)")
    p.add_argument("--draft", action="store_true", help="leave the release as a draft")
    add_remote_args(p, "GITHUB_TOKEN", "--base-url", GITHUB_URL_HELP)
    _add_onnx(p, "attach")
    p.set_defaults(func=cmd_publish_github)


def _add_onnx(p: argparse.ArgumentParser, verb: str) -> None:
    onnx = p.add_mutually_exclusive_group()
    onnx.add_argument("--onnx", metavar="FILE", help=f"also {verb} this ONNX export")
    onnx.add_argument("--with-onnx", action="store_true",
                      help=f"export the package to ONNX (model.onnx, tdsl.backends.onnx) and {verb} it too")


@contextmanager
def _onnx_extras(args: argparse.Namespace) -> Iterator[list[str]]:
    """The extra files to publish: `--onnx FILE`, or with `--with-onnx` a fresh export of the
    package (loaded and checked first) as `model.onnx` in a temporary folder."""
    if not args.with_onnx:
        yield [args.onnx] if args.onnx else []
        return
    from tdsl.publish.onnx import exported_onnx

    with exported_onnx(args.package_dir) as out:
        print(f"exported {out.path.name}: opset {out.opset}, {out.nbytes} bytes", file=sys.stderr)
        yield [str(out.path)]


def cmd_publish_hf(args: argparse.Namespace) -> int:
    from tdsl.publish.hf import publish_hf

    with _onnx_extras(args) as extras:
        commit = publish_hf(args.package_dir, args.repo_id, private=args.private, revision=args.revision,
                            message=args.message, token=args.token, extra_files=extras, endpoint=args.url)
    print(f"committed {len(commit.files)} files to {args.repo_id}: {commit.url}")
    return 0


def cmd_publish_github(args: argparse.Namespace) -> int:
    from tdsl.publish.github import publish_github

    with _onnx_extras(args) as extras:
        result = publish_github(args.package_dir, args.owner_repo, args.tag, notes=args.notes, draft=args.draft,
                                token=args.token, extra_files=extras, base_url=args.url)
    for name in sorted(result.sums):
        state = ("uploaded" if name in result.uploaded else "replaced" if name in result.replaced
                 else "unchanged")
        print(f"{result.sums[name]}  {name}  ({state})")
    print(f"{'draft' if result.draft else 'release'} {args.tag}: {result.url}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return command_main(add_parser, argv)


if __name__ == "__main__":
    sys.exit(main())
