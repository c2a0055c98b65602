"""Publishing a saved model package: Hugging Face Hub and GitHub Releases, with verification.

A model package is a folder with `model.safetensors`, `config.json` and `README.md` (the
model card, see `card.py`). `hf.py` uploads it to / downloads it from the Hub in one commit,
`github.py` attaches it to a release as a deterministic `.tar.gz` plus `SHA256SUMS` and
fetches it back with checksum verification and a safe extraction (`archive.py`).
Network clients are imported lazily, so importing `tdsl.publish` costs nothing.
"""
