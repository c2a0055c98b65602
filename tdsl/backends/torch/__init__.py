"""PyTorch backend: emits readable nn.Module source from tdsl IR."""
