"""Training data: SFT and DPO JSONL, tokenised with the chat template, packed, ordered and split by rank.

SFT rows are `{"messages": [{"role", "content"}, ...]}` or `{"prompt", "response"}` (optional "system").
DPO rows are `{"prompt", "chosen", "rejected"}` (optional "system") plus, once computed,
`ref_chosen_logp`, `ref_rejected_logp` (the reference model's summed response log-probs) and
`ref_chosen_tokens`, `ref_rejected_tokens` (how many target tokens they cover, so a changed tokenizer or
length limit is caught instead of silently mismatching).

Targets are shifted here, once: `targets[i]` is the token after position i when that token is an
assistant token, else `IGNORE_INDEX` (prompts, headers, padding, and the last position of a document,
which has no next token). Packing concatenates documents into fixed rows with a per-token document id;
the model's block-diagonal attention keeps documents apart and restarts positions in each.

Order. The plan of global rows (SFT: packed rows; DPO: pairs) is a pure function of the data, the seed
and the epoch, never of the world size: step s consumes global rows [s·G, (s+1)·G) of the endless
epoch-after-epoch stream (G = world · grad_accum · micro_batch), and rank r takes its contiguous slice.
That is what makes one process and N processes train on identical batches, and a resumed run continue
exactly where it stopped (the position is the step number). Reading is split too: each rank tokenises
every world-th row and the ranks exchange the results (`shard`, `gather`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from srlm_fast.io import DataError, read_jsonl_numbered
from srlm_fast.model.tokenizer import ROLES, Tokenizer

IGNORE_INDEX = -100
PAD_DOC = -1  # document id of padding tokens (their own "document": they never attend to real tokens)


@dataclass
class DataStats:
    """What loading did to the data; logged at the start of training."""

    path: str = ""
    rows: int = 0  # valid rows read
    bad_rows: int = 0  # skipped with on_bad_row="skip"
    truncated: int = 0  # sequences cut to max_seq_len
    dropped: int = 0  # rows dropped: too long with overlong="drop", or no target token left
    tokens: int = 0  # tokens kept (SFT: all documents; DPO: chosen + rejected)
    target_tokens: int = 0
    errors: list[str] = field(default_factory=list)  # file:line messages of skipped rows (first few)

    def summary(self) -> str:
        return (
            f"{self.path}: {self.rows} rows, {self.tokens} tokens ({self.target_tokens} targets); "
            f"truncated {self.truncated}, dropped {self.dropped}, bad rows skipped {self.bad_rows}"
        )


# ---- validation (runs inside read_jsonl, so errors carry file:line) -------------------------------


def _check_str(row: dict, key: str) -> str | None:
    if not isinstance(row.get(key), str):
        return f"field {key!r} must be a string, got {type(row.get(key)).__name__}"
    return None


def validate_sft_row(row: dict) -> str | None:
    """None if `row` is a usable SFT example, else what is wrong with it."""
    if "messages" in row:
        msgs = row["messages"]
        if not isinstance(msgs, list) or not msgs:
            return "field 'messages' must be a non-empty list"
        for i, m in enumerate(msgs):
            if not isinstance(m, dict) or m.get("role") not in ROLES or not isinstance(m.get("content"), str):
                return f"messages[{i}] must be {{'role': one of {ROLES}, 'content': string}}"
        if not any(m["role"] == "assistant" for m in msgs):
            return "no assistant message (nothing to train on)"
        return None
    if "prompt" in row or "response" in row:
        for key in ("prompt", "response"):
            if (err := _check_str(row, key)) is not None:
                return err
        if "system" in row and (err := _check_str(row, "system")) is not None:
            return err
        return None
    return "expected 'messages' or 'prompt' and 'response'"


def validate_dpo_row(row: dict) -> str | None:
    for key in ("prompt", "chosen", "rejected"):
        if (err := _check_str(row, key)) is not None:
            return err
    if "system" in row and (err := _check_str(row, "system")) is not None:
        return err
    has = [k in row for k in ("ref_chosen_logp", "ref_rejected_logp")]
    if any(has) and not all(has):
        return "give both ref_chosen_logp and ref_rejected_logp, or neither"
    for key in ("ref_chosen_logp", "ref_rejected_logp"):
        v = row.get(key)
        if key in row and (isinstance(v, bool) or not isinstance(v, int | float) or v != v or v > 0):
            return f"field {key!r} must be a finite log-probability (<= 0), got {v!r}"
    return None


def _read(path: str | os.PathLike, validate, on_bad_row: str, stats: DataStats) -> list[tuple[int, dict]]:
    """Valid rows with their 1-based line numbers; bad rows (undecodable bytes too) raise or are counted."""
    rows, errors = read_jsonl_numbered(
        path, validate=validate, on_error="raise" if on_bad_row == "error" else "skip"
    )
    stats.bad_rows += len(errors)
    stats.errors.extend(errors[:20])
    return rows


# ---- tokenisation ------------------------------------------------------------------------------


def shift_targets(ids: Sequence[int], mask: Sequence[bool]) -> list[int]:
    """targets[i] = ids[i+1] if that token is a target, else IGNORE_INDEX; the last position is ignored."""
    out = [tok if m else IGNORE_INDEX for tok, m in zip(ids[1:], mask[1:])]
    out.append(IGNORE_INDEX)
    return out


def sft_messages(row: dict) -> list[dict]:
    if "messages" in row:
        return row["messages"]
    msgs = [{"role": "system", "content": row["system"]}] if row.get("system") else []
    return [
        *msgs,
        {"role": "user", "content": row["prompt"]},
        {"role": "assistant", "content": row["response"]},
    ]


def _limit(
    ids: list[int], targets: list[int], max_len: int, overlong: str, stats: DataStats
) -> tuple[list[int], list[int]] | None:
    """Apply the length limit; None when the sequence is dropped."""
    if len(ids) > max_len:
        if overlong == "drop":
            stats.dropped += 1
            return None
        stats.truncated += 1
        # Truncated rows keep the target of their last kept position: that token exists in the data.
        ids, targets = ids[:max_len], targets[:max_len]
    if all(t == IGNORE_INDEX for t in targets):
        stats.dropped += 1
        return None
    return ids, targets


@dataclass
class SFTDocument:
    ids: list[int]
    targets: list[int]


def load_sft(
    path: str | os.PathLike,
    tokenizer: Tokenizer,
    *,
    max_seq_len: int,
    overlong: str = "truncate",
    on_bad_row: str = "error",
    shard: tuple[int, int] = (0, 1),
    gather: Callable[[Any], list] | None = None,
) -> tuple[list[SFTDocument], DataStats]:
    """Read and tokenise an SFT JSONL file into documents with shifted targets.

    shard=(rank, world) with `gather` (an all-gather of Python objects): each rank tokenises only every
    world-th row and the ranks exchange the results, so the tokenising work is split while every rank
    ends with the same, complete document list (the global packing plan needs every length).
    """
    stats = DataStats(path=str(path))
    rank, world = shard
    docs: list[tuple[int, SFTDocument]] = []
    for i, (_, row) in enumerate(_read(path, validate_sft_row, on_bad_row, stats)):
        if i % world != rank:
            continue
        ids, mask = tokenizer.encode_chat(sft_messages(row))
        kept = _limit(ids, shift_targets(ids, mask), max_seq_len, overlong, stats)
        if kept is None:
            continue
        docs.append((i, SFTDocument(*kept)))
        stats.rows += 1
        stats.tokens += len(kept[0])
        stats.target_tokens += sum(t != IGNORE_INDEX for t in kept[1])
    out = _merge_shards(docs, stats, None, world, gather)
    if not out:
        raise DataError(f"{path}: no usable SFT rows ({stats.summary()})")
    return out, stats


_COUNTS = ("rows", "truncated", "dropped", "tokens", "target_tokens")


def _merge_shards(
    items: list[tuple[int, Any]], stats: DataStats, error: str | None, world: int, gather
) -> list:
    """Every rank's (index, item) lists merged in index order; per-shard counts summed into `stats`.

    An error found on one rank is raised on all of them after the exchange (raising before it would
    leave the other ranks waiting in the collective)."""
    if world > 1:
        if gather is None:
            raise ValueError("a sharded load needs `gather` (an all-gather of Python objects)")
        parts = gather((items, {k: getattr(stats, k) for k in _COUNTS}, error))
        items = [x for part in parts for x in part[0]]
        for k in _COUNTS:
            setattr(stats, k, sum(part[1][k] for part in parts))
        error = next((part[2] for part in parts if part[2] is not None), None)
    if error is not None:
        raise DataError(error)
    return [item for _, item in sorted(items, key=lambda x: x[0])]


@dataclass
class TokenizedPair:
    line: int  # 1-based line in the source file (for error messages and for writing reference log-probs)
    chosen_ids: list[int]
    chosen_targets: list[int]
    rejected_ids: list[int]
    rejected_targets: list[int]
    ref_chosen_logp: float | None
    ref_rejected_logp: float | None

    @property
    def chosen_n(self) -> int:
        return sum(t != IGNORE_INDEX for t in self.chosen_targets)

    @property
    def rejected_n(self) -> int:
        return sum(t != IGNORE_INDEX for t in self.rejected_targets)


def _dpo_sequence(tokenizer: Tokenizer, row: dict, response: str) -> tuple[list[int], list[int]]:
    msgs = [{"role": "system", "content": row["system"]}] if row.get("system") else []
    msgs += [{"role": "user", "content": row["prompt"]}, {"role": "assistant", "content": response}]
    ids, mask = tokenizer.encode_chat(msgs)
    return ids, shift_targets(ids, mask)


def load_dpo(
    path: str | os.PathLike,
    tokenizer: Tokenizer,
    *,
    max_seq_len: int,
    overlong: str = "truncate",
    on_bad_row: str = "error",
    shard: tuple[int, int] = (0, 1),
    gather: Callable[[Any], list] | None = None,
) -> tuple[list[TokenizedPair], DataStats]:
    """Read and tokenise DPO pairs (chosen and rejected share the prompt; each is limited on its own).

    shard and gather split the tokenising work over ranks as in `load_sft`."""
    stats = DataStats(path=str(path))
    rank, world = shard
    pairs: list[tuple[int, TokenizedPair]] = []
    error = None
    for i, (line, row) in enumerate(_read(path, validate_dpo_row, on_bad_row, stats)):
        if i % world != rank or error is not None:
            continue
        chosen = _limit(*_dpo_sequence(tokenizer, row, row["chosen"]), max_seq_len, overlong, stats)
        rejected = _limit(*_dpo_sequence(tokenizer, row, row["rejected"]), max_seq_len, overlong, stats)
        if chosen is None or rejected is None:
            continue
        pair = TokenizedPair(
            line, *chosen, *rejected, row.get("ref_chosen_logp"), row.get("ref_rejected_logp")
        )
        for side, n in (("chosen", pair.chosen_n), ("rejected", pair.rejected_n)):
            want = row.get(f"ref_{side}_tokens")
            if want is not None and want != n and error is None:
                error = (
                    f"{path}:{line}: ref_{side}_logp was computed over {want} target tokens but this "
                    f"tokenizer and max_seq_len give {n}; recompute the reference log-probs"
                )
        pairs.append((i, pair))
        stats.rows += 1
        stats.tokens += len(chosen[0]) + len(rejected[0])
        stats.target_tokens += pair.chosen_n + pair.rejected_n
    out = _merge_shards(pairs, stats, error, world, gather)
    if not out:
        raise DataError(f"{path}: no usable DPO pairs ({stats.summary()})")
    return out, stats


# ---- packing and batching ------------------------------------------------------------------------


@dataclass
class PackedRow:
    ids: list[int]
    targets: list[int]
    doc_ids: list[int]


def pack_documents(docs: Sequence[SFTDocument], seq_len: int, pack: bool = True) -> list[PackedRow]:
    """Greedy, order-preserving packing: a document that does not fit starts a new row.

    With pack=False every document gets a row of its own. Rows are not padded here (see `collate_sft`).
    """
    rows: list[PackedRow] = []
    cur = PackedRow([], [], [])
    n_docs = 0
    for doc in docs:
        if cur.ids and (not pack or len(cur.ids) + len(doc.ids) > seq_len):
            rows.append(cur)
            cur, n_docs = PackedRow([], [], []), 0
        cur.ids.extend(doc.ids)
        cur.targets.extend(doc.targets)
        cur.doc_ids.extend([n_docs] * len(doc.ids))
        n_docs += 1
    if cur.ids:
        rows.append(cur)
    return rows


@dataclass
class SFTBatch:
    input_ids: Tensor  # (B, T) int64
    targets: Tensor  # (B, T) int64, IGNORE_INDEX where there is no target
    doc_ids: Tensor | None  # (B, T) int64; None when every row holds one document (plain causal attention)
    n_tokens: int  # real (non-padding) tokens

    @property
    def n_targets(self) -> int:
        return int((self.targets != IGNORE_INDEX).sum())


def collate_sft(rows: Sequence[PackedRow], pad_id: int, pad_to: int | None = None) -> SFTBatch:
    """Right-pad rows to the longest one (or `pad_to`); padding is its own document with no targets."""
    T = max(pad_to or 0, max(len(r.ids) for r in rows))
    ids = torch.full((len(rows), T), pad_id, dtype=torch.long)
    tgt = torch.full((len(rows), T), IGNORE_INDEX, dtype=torch.long)
    doc = torch.full((len(rows), T), PAD_DOC, dtype=torch.long)
    multi = False
    for i, r in enumerate(rows):
        n = len(r.ids)
        ids[i, :n] = torch.tensor(r.ids)
        tgt[i, :n] = torch.tensor(r.targets)
        doc[i, :n] = torch.tensor(r.doc_ids)
        multi = multi or r.doc_ids[-1] != 0
    # One document per row + right padding: causal attention is already exact for the real tokens, and
    # SDPA's causal path is much faster than an explicit block-diagonal mask.
    return SFTBatch(ids, tgt, doc if multi else None, sum(len(r.ids) for r in rows))


@dataclass
class DPOBatch:
    input_ids: Tensor  # (2P, T): chosen rows [0:P], rejected rows [P:2P]
    targets: Tensor  # (2P, T)
    ref_chosen: Tensor  # (P,) fp32
    ref_rejected: Tensor  # (P,)
    n_tokens: int  # real (non-padding) tokens
    # (P,) bool: the pair states a preference. A replay row (chosen = rejected, recipe `pairs.replay`) trains only
    # through the NLL term; its margin is 0 by construction, so the reward metrics leave it out.
    preference: Tensor

    @property
    def n_pairs(self) -> int:
        return self.ref_chosen.shape[0]


def collate_dpo(pairs: Sequence[TokenizedPair], pad_id: int, *, need_reference: bool = True) -> DPOBatch:
    seqs = [(p.chosen_ids, p.chosen_targets) for p in pairs] + [
        (p.rejected_ids, p.rejected_targets) for p in pairs
    ]
    T = max(len(s[0]) for s in seqs)
    ids = torch.full((len(seqs), T), pad_id, dtype=torch.long)
    tgt = torch.full((len(seqs), T), IGNORE_INDEX, dtype=torch.long)
    for i, (s_ids, s_tgt) in enumerate(seqs):
        ids[i, : len(s_ids)] = torch.tensor(s_ids)
        tgt[i, : len(s_tgt)] = torch.tensor(s_tgt)
    if need_reference and any(p.ref_chosen_logp is None for p in pairs):
        raise DataError("pairs without reference log-probs reached training; compute them first")
    ref_c = torch.tensor([p.ref_chosen_logp or 0.0 for p in pairs], dtype=torch.float32)
    ref_r = torch.tensor([p.ref_rejected_logp or 0.0 for p in pairs], dtype=torch.float32)
    preference = torch.tensor([p.chosen_ids != p.rejected_ids for p in pairs], dtype=torch.bool)
    return DPOBatch(ids, tgt, ref_c, ref_r, sum(len(s[0]) for s in seqs), preference)


class EpochStream:
    """Global rows (packed SFT rows or DPO pairs) of an endless sequence of shuffled epochs.

    Epoch e is a permutation of the items drawn from `seed` and e (SFT documents are packed after the
    shuffle). `rows(start, stop)` returns global rows [start, stop) across epoch boundaries.
    """

    def __init__(self, items: Sequence, seed: int, make_rows=None) -> None:
        self.items = list(items)
        self.seed = seed
        self.make_rows = make_rows or (lambda xs: xs)
        self._epochs: dict[int, list] = {}
        self._starts = [0]  # global index of the first row of each materialised epoch

    def epoch(self, e: int) -> list:
        if e not in self._epochs:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + e)
            perm = torch.randperm(len(self.items), generator=g).tolist()
            self._epochs[e] = self.make_rows([self.items[i] for i in perm])
            # Keep at most two epochs in memory (a step spans at most one boundary in practice).
            for old in [k for k in self._epochs if k < e - 1]:
                del self._epochs[old]
        return self._epochs[e]

    def _epoch_len(self, e: int) -> int:
        return len(self.epoch(e))

    def rows_per_epoch(self) -> int:
        return self._epoch_len(0)

    def rows(self, start: int, stop: int) -> list:
        out = []
        e = 0
        while start < stop:
            while len(self._starts) <= e + 1:
                self._starts.append(self._starts[-1] + self._epoch_len(len(self._starts) - 1))
            lo, hi = self._starts[e], self._starts[e + 1]
            if start >= hi:
                e += 1
                continue
            take = min(stop, hi) - start
            rows = self.epoch(e)
            out.extend(rows[start - lo : start - lo + take])
            start += take
        return out


@dataclass(frozen=True)
class BatchPlan:
    """How global rows split into steps, ranks and micro-batches."""

    micro_batch_size: int
    grad_accum: int
    world_size: int
    rank: int

    @property
    def global_rows(self) -> int:
        return self.micro_batch_size * self.grad_accum * self.world_size

    def micro_batches(self, stream: EpochStream, step: int) -> list[list]:
        """This rank's micro-batches for optimizer step `step` (0-based)."""
        per_rank = self.micro_batch_size * self.grad_accum
        start = step * self.global_rows + self.rank * per_rank
        mine = stream.rows(start, start + per_rank)
        mb = self.micro_batch_size
        return [mine[i : i + mb] for i in range(0, per_rank, mb)]


def sft_stream(docs: Sequence[SFTDocument], seq_len: int, pack: bool, seed: int) -> EpochStream:
    return EpochStream(docs, seed, lambda xs: pack_documents(xs, seq_len, pack))


def dpo_stream(pairs: Sequence[TokenizedPair], seed: int) -> EpochStream:
    return EpochStream(pairs, seed)


def default_reference_path(pairs_path: str | os.PathLike) -> Path:
    p = Path(pairs_path)
    return p.with_name(p.stem + ".ref.jsonl")
