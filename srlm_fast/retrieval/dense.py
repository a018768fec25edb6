"""Dense retrieval (the optional `dense` extra: faiss-cpu): passages and queries as unit vectors, scored by cosine.

Embedders:
- `LlamaEmbedder`: a srlm_fast checkpoint's own final hidden states, mean-pooled over the real tokens. No second
  model to ship: the policy embeds its own evidence. A decoder trained only for next-token prediction is a weak
  embedder (the README reports the measured recall); fine-tuning it contrastively is what makes it a good one.
- `HFEmbedder`: a user's embedding model directory (a sentence encoder in transformers layout), mean-pooled as
  sentence-transformers does. transformers is imported when one is used.

The vectors live in a faiss inner-product index (exact, `IndexFlatIP`); `scores` multiplies with the stored matrix
directly, so shards and hybrid fusion see the very numbers the index holds.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from srlm_fast.io import DataError, read_json
from srlm_fast.model.llama import Llama
from srlm_fast.model.tokenizer import Tokenizer
from srlm_fast.retrieval.base import Hit, Retriever
from srlm_fast.retrieval.corpus import Passage


def require_faiss():
    """The faiss module, or a clear error naming the extra that installs it."""
    try:
        import faiss
    except ImportError:
        raise RuntimeError(
            "dense retrieval needs faiss: pip install 'srlm-fast[dense]' (or faiss-cpu)"
        ) from None
    return faiss


def _normalize(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.maximum(norms, 1e-12)).astype(np.float32)


class LlamaEmbedder:
    """Mean-pooled final hidden states of a srlm_fast (HF-layout Llama) checkpoint."""

    def __init__(
        self, directory: str, *, device: str = "cpu", max_tokens: int = 256, batch_size: int = 16
    ) -> None:
        self.directory = str(directory)
        self.device = torch.device(device)
        self.model = Llama.from_pretrained(directory, dtype=torch.float32, device=self.device).eval()
        self.tokenizer = Tokenizer.from_dir(directory)
        self.max_tokens = min(max_tokens, self.model.config.max_seq_len)
        self.batch_size = batch_size

    def spec(self) -> dict:
        return {"type": "llama", "path": self.directory, "max_tokens": self.max_tokens}

    @torch.no_grad()
    def embed(self, texts: Sequence[str]) -> np.ndarray:
        # Longest first: batches of similar lengths waste less padding.
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        vecs: list[np.ndarray | None] = [None] * len(texts)
        for lo in range(0, len(order), self.batch_size):
            idx = order[lo : lo + self.batch_size]
            ids = [self.tokenizer.encode(texts[i])[: self.max_tokens] or [0] for i in idx]
            T = max(map(len, ids))
            input_ids = torch.zeros(len(ids), T, dtype=torch.long)
            mask = torch.zeros(len(ids), T, dtype=torch.long)
            for r, x in enumerate(ids):  # right padding
                input_ids[r, : len(x)] = torch.tensor(x)
                mask[r, : len(x)] = 1
            hidden = self.model(input_ids.to(self.device), attention_mask=mask.to(self.device))  # (B, T, D)
            m = mask.to(hidden).unsqueeze(-1)  # (B, T, 1)
            pooled = (hidden * m).sum(1) / m.sum(1)  # (B, D)
            for r, i in enumerate(idx):
                vecs[i] = pooled[r].float().cpu().numpy()
        out = np.stack(vecs) if vecs else np.zeros((0, self.model.config.dim), np.float32)
        return _normalize(out)


class HFEmbedder:
    """A transformers encoder directory, mean-pooled over the attention mask."""

    def __init__(
        self, directory: str, *, device: str = "cpu", max_tokens: int = 256, batch_size: int = 32
    ) -> None:
        from transformers import AutoModel, AutoTokenizer  # optional: only for a user's embedding model

        self.directory = str(directory)
        self.device = torch.device(device)
        self.tokenizer = AutoTokenizer.from_pretrained(directory)
        self.model = AutoModel.from_pretrained(directory).to(self.device).eval()
        self.max_tokens, self.batch_size = max_tokens, batch_size

    def spec(self) -> dict:
        return {"type": "hf", "path": self.directory, "max_tokens": self.max_tokens}

    @torch.no_grad()
    def embed(self, texts: Sequence[str]) -> np.ndarray:
        out = []
        for lo in range(0, len(texts), self.batch_size):
            batch = self.tokenizer(list(texts[lo : lo + self.batch_size]), padding=True, truncation=True,
                                   max_length=self.max_tokens, return_tensors="pt").to(self.device)  # fmt: skip
            hidden = self.model(**batch).last_hidden_state  # (B, T, D)
            m = batch["attention_mask"].to(hidden).unsqueeze(-1)
            out.append(((hidden * m).sum(1) / m.sum(1)).float().cpu().numpy())
        return _normalize(np.concatenate(out))


def load_embedder(directory: str, kind: str = "auto", device: str = "cpu"):
    """An embedder for `directory`: kind "llama" (a srlm_fast/HF Llama checkpoint), "hf" (any transformers
    encoder), or "auto" (llama when config.json says model_type llama)."""
    if kind == "auto":
        cfg_path = Path(directory) / "config.json"
        if not cfg_path.is_file():
            raise FileNotFoundError(f"--embedder: {directory}: no config.json (not a model directory)")
        cfg = read_json(cfg_path)
        kind = "llama" if isinstance(cfg, dict) and cfg.get("model_type") == "llama" else "hf"
    if kind == "llama":
        return LlamaEmbedder(directory, device=device)
    if kind == "hf":
        return HFEmbedder(directory, device=device)
    raise ValueError(f"embedder kind must be auto, llama or hf, got {kind!r}")


class DenseRetriever(Retriever):
    """Cosine similarity between embedded queries and passages (faiss `IndexFlatIP` over unit vectors)."""

    kind = "dense"

    def __init__(self, embedder=None) -> None:
        super().__init__()
        self.embedder = embedder
        self.embeddings = np.zeros((0, 0), np.float32)  # (passages, dim), unit rows
        self._faiss_index = None
        self._spec: dict = embedder.spec() if embedder is not None else {}

    def params(self) -> dict:
        return {"embedder": self._spec}

    def _require_embedder(self):
        if self.embedder is None:
            raise ValueError("this dense index has no embedder loaded (pass one to load_index)")
        return self.embedder

    def _index(self, passages: list[Passage]) -> None:
        self.set_embeddings(self._require_embedder().embed([p.indexed_text for p in passages]))

    def set_embeddings(self, embeddings: np.ndarray) -> None:
        faiss = require_faiss()
        self.embeddings = np.ascontiguousarray(embeddings, dtype=np.float32)
        self._faiss_index = faiss.IndexFlatIP(self.embeddings.shape[1])
        self._faiss_index.add(self.embeddings)

    def scores(self, queries: Sequence[str]) -> np.ndarray:
        return self._require_embedder().embed(list(queries)) @ self.embeddings.T

    def search(self, queries: Sequence[str], k: int = 10) -> list[list[Hit]]:
        """faiss's top-k, re-sorted by (score, position) (exact search; ties at the k-th place are faiss's)."""
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        q = self._require_embedder().embed(list(queries))
        k = min(k, len(self.passages))
        values, positions = self._faiss_index.search(q, k)
        out = []
        for vals, pos in zip(values, positions):
            order = np.lexsort((pos, -vals.astype(np.float64)))
            out.append(
                [Hit(self.offset + int(pos[j]), self.passages[pos[j]].id, float(vals[j])) for j in order]
            )
        return out

    def _shard(self, lo: int, hi: int) -> DenseRetriever:
        part = DenseRetriever(self.embedder)
        part._spec = self._spec
        part.set_embeddings(self.embeddings[lo:hi])
        return part

    def _save(self, directory: Path) -> None:
        (directory / "dense").mkdir()
        np.save(directory / "dense" / "embeddings.npy", self.embeddings, allow_pickle=False)
        (directory / "dense" / "embedder.json").write_text(json.dumps(self._spec, indent=2) + "\n")

    def _load(self, directory: Path, manifest: dict, mmap: bool = False) -> None:
        path = directory / "dense" / "embeddings.npy"
        if not path.is_file():
            raise DataError(f"{directory}: a dense index without dense/embeddings.npy; rebuild it")
        emb = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
        if emb.ndim != 2 or emb.shape[0] != manifest["n_passages"]:
            raise DataError(
                f"{path}: shape {emb.shape} does not fit {manifest['n_passages']} passages; rebuild"
            )
        self._spec = manifest["params"].get("embedder", {})
        self.set_embeddings(np.asarray(emb))
