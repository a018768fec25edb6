"""srlm-fast: a fast, lean trainer for self-rewarding language models."""

__version__ = "0.1.0"
