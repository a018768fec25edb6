"""Retrieval: corpus readers, the `Retriever` interface, BM25 (default), dense and hybrid retrievers, indexes on
disk tied to their corpus, and top-k search sharded over torchrun ranks."""
