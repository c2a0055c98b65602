"""`tdsl import SOURCE -o OUT`: a model people already have, as a tdsl package.

    tdsl import ./bitnet-b1.58-2B-4T -o out/bitnet     # Hugging Face BitNetForCausalLM folder
    tdsl import model.pt2 -o out/model                   # a torch.export program (torch.export.save)

The importer is chosen from SOURCE: a folder holding config.json is a Hugging Face checkpoint
(`tdsl.importers.hf_bitnet`), a `.pt2` file a torch.export program
(`tdsl.importers.torch_export`). Anything else is an error that says what is accepted. The
package is written to a temporary folder and renamed into place, so a failure leaves nothing.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from tdsl.errors import TdslError
from tdsl.tools.common import add_force_arg, command_main, refuse_overwrite


def add_parser(sub: Any) -> None:
    p = sub.add_parser("import", help="import a Hugging Face BitNet folder or a torch.export program (.pt2) "
                                      "as a tdsl package")
    p.add_argument("source", help="a Hugging Face model folder (config.json, model.safetensors, tokenizer.json) "
                                  "or a torch.export program saved with torch.export.save (.pt2)")
    p.add_argument("-o", "--output", required=True, help="the package folder to write")
    add_force_arg(p)
    p.set_defaults(func=cmd_import)


def importer_for(source: str) -> str:
    """"hf" or "torch-export" for what SOURCE is; a TdslError naming what is accepted otherwise."""
    path = Path(source)
    if path.is_dir():
        if (path / "config.json").is_file():
            return "hf"
        raise TdslError(f"{source}: a folder without config.json: tdsl import takes a Hugging Face model folder "
                        "(config.json, model.safetensors, tokenizer.json) or a .pt2 file")
    if path.suffix == ".pt2":
        if not path.is_file():
            raise TdslError(f"{source}: no such file")
        return "torch-export"
    if not path.exists():
        raise TdslError(f"{source}: no such file or folder")
    raise TdslError(f"{source}: tdsl import takes a Hugging Face model folder (config.json, model.safetensors, "
                    "tokenizer.json) or a torch.export program saved with torch.export.save (.pt2)")


def cmd_import(args: argparse.Namespace) -> int:
    refuse_overwrite(args.output, args.force)
    kind = importer_for(args.source)
    if kind == "hf":
        from tdsl.importers.hf_bitnet import import_hf_folder

        summary = import_hf_folder(args.source, args.output, overwrite=args.force)
    else:
        from tdsl.importers.torch_export import import_pt2

        summary = import_pt2(args.source, args.output, overwrite=args.force)
    print(summary)
    return 0


def main(argv: list[str] | None = None) -> int:
    return command_main(add_parser, argv)
