"""qbench: benchmark quantization-aware training on sequence-to-sequence models."""

__version__ = "0.1.0"
