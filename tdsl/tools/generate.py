"""`tdsl generate PACKAGE --prompt TEXT --max-new-tokens N`: continue a text with a saved
decoder on the Numba runtime (packed weights, key/value cache, no torch).

Tokens come from the package's tokenizer.json when it has one (an imported Hugging Face
checkpoint, `tdsl.importers.tokenizer`; generation stops at its end-of-sequence id), else
they are bytes (`tdsl.train.lm.encode_bytes`): the decoder's vocabulary must cover the
prompt's UTF-8 bytes (256 for any text). The continuation goes to stdout; prefill and
decode speeds (tokens/s, after one warm-up run that compiles the kernels) to stderr.
Imports no torch.
"""
from __future__ import annotations

import argparse
import sys
from typing import Any

from tdsl.errors import TdslError
from tdsl.tools.common import command_main


def add_parser(sub: Any) -> None:
    p = sub.add_parser("generate", help="continue a text prompt with a saved decoder package (Numba, no torch)")
    p.add_argument("package", help="a package folder (tdsl.save) holding a decoder such as the zoo's bitnet")
    p.add_argument("--prompt", required=True,
                   help="the text to continue (the package's tokenizer.json, else byte-level tokens)")
    p.add_argument("--max-new-tokens", type=int, default=64, metavar="N", help="tokens to generate (default 64)")
    p.add_argument("--temperature", type=float, default=0.0,
                   help="0 (default) decodes greedily; above 0 samples from softmax(logits / T)")
    p.add_argument("--top-k", type=int, default=None, metavar="K", help="sample among the K likeliest tokens")
    p.add_argument("--seed", type=int, default=0, help="the sampling seed (default 0)")
    p.add_argument("--no-warmup", action="store_true",
                   help="time the first run too (it includes compiling the kernels)")
    p.set_defaults(func=cmd_generate)


def cmd_generate(args: argparse.Namespace) -> int:
    import tdsl
    from tdsl.backends.numba.generate import Generator
    from tdsl.importers.tokenizer import Tokenizer

    if args.max_new_tokens < 1:
        raise TdslError(f"--max-new-tokens must be at least 1, got {args.max_new_tokens}")
    if not args.prompt:
        raise TdslError("--prompt is empty: give at least one character to continue")
    package = tdsl.load(args.package)
    tokenizer = Tokenizer.for_package(package.path, package.config)
    prompt = tokenizer.encode(args.prompt)
    if len(prompt) == 0:
        raise TdslError("--prompt gives no tokens: give at least one character to continue")
    generator = Generator(package.deploy(), capacity=len(prompt) + args.max_new_tokens)
    options = {"temperature": args.temperature, "top_k": args.top_k, "seed": args.seed}
    stop = tokenizer.eos_token_ids[0] if tokenizer.eos_token_ids else None
    if not args.no_warmup:
        generator.generate(prompt, min(2, args.max_new_tokens), **options)
    result = generator.generate(prompt, args.max_new_tokens, stop=stop, **options)
    tokens = result.tokens[0]
    if stop is not None and stop in tokens:
        tokens = tokens[:tokens.index(stop)]
    print(args.prompt + tokenizer.decode(tokens))
    decode_steps = len(result.tokens[0]) - 1
    print(f"prefill: {len(prompt)} tokens in {result.prefill_seconds * 1e3:.1f} ms "
          f"({result.prefill_tokens_per_second:.1f} tokens/s); decode: {decode_steps} tokens in "
          f"{result.decode_seconds * 1e3:.1f} ms ({result.decode_tokens_per_second:.1f} tokens/s)", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    return command_main(add_parser, argv)
