"""The model card, where publishing code found it; it lives in `tdsl.package.card` (a package
holds its card, and the package writer is below the publishers)."""
from tdsl.package.card import card_data, render_model_card, write_model_card

__all__ = ["card_data", "render_model_card", "write_model_card"]
