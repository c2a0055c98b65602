"""Importers: models people already have, brought in as tdsl packages.

One module per source format, each with one entry point that writes a package folder:
`hf_bitnet` (a Hugging Face `BitNetForCausalLM` folder: config.json, model.safetensors,
tokenizer.json) and `torch_export` (a `torch.export` program, `.pt2`). `tdsl import` picks
the importer from what it is given (`tdsl.tools.import_`).
"""
