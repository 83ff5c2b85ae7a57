"""distill: distil cross-encoder rerankers into fast rankers."""

__version__ = "0.1.0"
