"""`tdsl publish hf|github` and `tdsl fetch hf|github`: thin argparse wrappers over the library.

`tdsl fetch` loads what it downloaded (as `tdsl.load` does: config, the weights' SHA-256, the
tensors against the rebuilt program) before moving it into place, and prints a summary.

Tokens: `--token`, else HF_TOKEN / the Hub login, or GITHUB_TOKEN; prefer the environment,
since a command-line argument is visible to other users of the machine. Never printed.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

from tdsl.errors import TdslError


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
    _add_onnx(p, "upload")
    p.set_defaults(func=cmd_publish_hf)

    p = targets.add_parser("github", help="attach to a GitHub release: .tar.gz, SHA256SUMS, ONNX")
    p.add_argument("owner_repo", metavar="OWNER/REPO")
    p.add_argument("package_dir", help="the model package folder")
    p.add_argument("--tag", required=True, help="release tag (the release is created if missing)")
    p.add_argument("--notes", help="release notes (the checksums are appended)")
    p.add_argument("--draft", action="store_true", help="leave the release as a draft")
    _add_common(p, "GITHUB_TOKEN", "--base-url", "API URL (default https://api.github.com)")
    _add_onnx(p, "attach")
    p.set_defaults(func=cmd_publish_github)

    fetch = sub.add_parser("fetch", help="download a model package, verify it and load it")
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


def _add_onnx(p: argparse.ArgumentParser, verb: str) -> None:
    onnx = p.add_mutually_exclusive_group()
    onnx.add_argument("--onnx", metavar="FILE", help=f"also {verb} this ONNX export")
    onnx.add_argument("--with-onnx", action="store_true",
                      help=f"export the package to ONNX (model.onnx, tdsl.backends.onnx) and {verb} it too")


def _add_common(p: argparse.ArgumentParser, token_env: str, url_flag: str, url_help: str) -> None:
    p.add_argument("--token", help=f"access token (default: {token_env}; prefer the environment)")
    p.add_argument(url_flag, dest="url", help=url_help)


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


def cmd_fetch_hf(args: argparse.Namespace) -> int:
    from tdsl.publish.hf import fetch_hf

    _fetch_and_load(lambda dest: fetch_hf(args.repo_id, dest, revision=args.revision, token=args.token,
                                          endpoint=args.url), args.output)
    return 0


def cmd_fetch_github(args: argparse.Namespace) -> int:
    from tdsl.publish.github import fetch_github

    _fetch_and_load(lambda dest: fetch_github(args.owner_repo, args.tag, dest, token=args.token, base_url=args.url),
                    args.output, verified="verified against SHA256SUMS")
    return 0


@contextmanager
def _onnx_extras(args: argparse.Namespace) -> Iterator[list[str]]:
    """The extra files to publish: `--onnx FILE`, or with `--with-onnx` a fresh export of the
    package (loaded and checked first) as `model.onnx` in a temporary folder."""
    if not args.with_onnx:
        yield [args.onnx] if args.onnx else []
        return
    from tdsl.backends.onnx import export_onnx
    from tdsl.package import load
    from tdsl.publish.archive import check_package

    frozen = load(check_package(args.package_dir)).to_frozen()
    with tempfile.TemporaryDirectory(prefix="tdsl-onnx-") as tmp:
        out = export_onnx(frozen, Path(tmp) / "model.onnx")
        print(f"exported {out.path.name}: opset {out.opset}, {out.nbytes} bytes", file=sys.stderr)
        yield [str(out.path)]


def _fetch_and_load(fetch: Callable[[Path], Path], output: str, verified: str | None = None) -> Path:
    """Fetch into a staging folder inside `output`, load the package there, then move it to
    `output/NAME`. A download or a package that fails to load leaves no new files behind (and a
    previous `output/NAME` untouched). Summary on stderr, the package path on stdout."""
    from tdsl.package import load
    from tdsl.publish.archive import fresh_dir_beside, replace_dir

    out = Path(output)
    try:
        staging = fresh_dir_beside(out / ".tdsl-fetch")
    except OSError as e:
        raise TdslError(f"{out}: cannot create the output folder ({e.strerror})") from None
    try:
        fetched = fetch(staging)
        try:
            pkg = load(fetched)
        except TdslError as e:
            message = e.message.replace(str(fetched), fetched.name)  # the staging folder is about to go
            raise TdslError(f"the fetched package {fetched.name} does not load, so it was not kept: {message}",
                            e.loc, e.notes) from None
        target = out / fetched.name
        replace_dir(fetched, target)
        pkg.path = target
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if verified:
        print(f"{verified}: {target}", file=sys.stderr)
    for line in package_summary(pkg):
        print(line, file=sys.stderr)
    print(target)
    return target


def package_summary(pkg: Any) -> list[str]:
    """A few lines about a loaded package: name, entry, precision, weights, inputs, extra files."""
    config = pkg.config
    weights = config.get("weights", {})
    model = config.get("model", {})
    params = ", ".join(f"{k}={v}" for k, v in model.get("params", {}).items())

    def io(spec: Any) -> str:
        shape = ", ".join("batch" if d is None else str(d) for d in spec.get("shape") or [])
        return f"{spec.get('name')}: {spec.get('dtype')}[{shape}]"

    known = ("config.json", "README.md", weights.get("file"))
    extras = sorted(p.name for p in pkg.path.iterdir()
                    if p.is_file() and not p.name.startswith(".") and p.name not in known)
    lines = [f"loaded {pkg.name}: entry {pkg.compiled.entry}" + (f"({params})" if params else ""),
             f"  precision {pkg.precision or 'unknown'}, packed format {pkg.format}",
             f"  weights {weights.get('file')}: {weights.get('bytes')} bytes, {len(pkg.arrays)} tensors",
             f"  inputs {'; '.join(io(s) for s in config.get('inputs', [])) or 'none recorded'}"]
    if extras:
        lines.append(f"  also {', '.join(extras)}")
    return lines
