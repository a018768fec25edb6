"""DPO reference log-probs, computed once before training so no reference model sits in memory.

For every pair, the reference model's summed log-probs of the chosen and rejected responses (the same
fused kernels and the same tokenisation and length limits as training) are written beside the pairs as
`ref_chosen_logp`, `ref_rejected_logp`, with `ref_chosen_tokens`, `ref_rejected_tokens` (the number of
target tokens they sum over; training checks them, so a changed tokenizer or `max_seq_len` is an error,
not a silent mismatch). Output files are written atomically.

Under torchrun each rank scores its own slice of the pairs on the sharded model; every rank makes the same
number of forward calls (FSDP's all-gathers run in lockstep) and rank 0 writes the file.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch

from srlm_fast import distributed as D
from srlm_fast.io import write_jsonl_atomic
from srlm_fast.model.checkpoint import read_model_config
from srlm_fast.model.tokenizer import Tokenizer
from srlm_fast.train.data import TokenizedPair, collate_dpo, default_reference_path, load_dpo
from srlm_fast.train.losses import LMWithLoss, build_lm


@torch.no_grad()
def score_pairs(
    lm: LMWithLoss, pairs: Sequence[TokenizedPair], info: D.DistInfo, *, batch_size: int, pad_id: int
) -> list[tuple[float, float]]:
    """(chosen, rejected) summed log-probs of every pair, on every rank, in the order given."""
    n = len(pairs)
    per_rank = -(-n // info.world_size)
    mine = list(pairs[info.rank * per_rank : (info.rank + 1) * per_rank])
    n_calls = -(-per_rank // batch_size)  # the same on every rank: lockstep under FSDP
    was_training = lm.training
    lm.eval()
    results: list[tuple[float, float]] = []
    for i in range(n_calls):
        chunk = mine[i * batch_size : (i + 1) * batch_size]
        real = len(chunk)
        if not chunk:  # this rank ran out: score a dummy pair so the collectives still match
            chunk = [pairs[0]]
        batch = collate_dpo(chunk, pad_id, need_reference=False)
        out = lm(batch.input_ids.to(info.device), batch.targets.to(info.device), mode="logprobs")
        logps = out["logps"].float().cpu()  # (2P,)
        p = len(chunk)
        results.extend(zip(logps[:p].tolist()[:real], logps[p:].tolist()[:real]))
    lm.train(was_training)
    D.reshard(lm)
    gathered = D.all_gather_objects(results, info)
    return [x for part in gathered for x in part]


def attach_and_write(
    pairs: Sequence[TokenizedPair],
    scores: Sequence[tuple[float, float]],
    pairs_in: str | os.PathLike,
    pairs_out: Path,
) -> None:
    """Set the pairs' reference log-probs and write the scored rows (the source rows plus ref fields)."""
    import json

    with open(pairs_in, encoding="utf-8") as f:
        lines = f.readlines()
    rows = []
    for pair, (c, r) in zip(pairs, scores, strict=True):
        pair.ref_chosen_logp, pair.ref_rejected_logp = c, r
        row = json.loads(lines[pair.line - 1])
        row.update(
            ref_chosen_logp=c,
            ref_rejected_logp=r,
            ref_chosen_tokens=pair.chosen_n,
            ref_rejected_tokens=pair.rejected_n,
        )
        rows.append(row)
    write_jsonl_atomic(pairs_out, rows)


def compute_reference_logprobs(
    checkpoint_dir: str | os.PathLike,
    pairs_in: str | os.PathLike,
    pairs_out: str | os.PathLike | None = None,
    *,
    max_seq_len: int = 1024,
    batch_size: int = 8,
    device: str = "auto",
    overlong: str = "truncate",
    on_bad_row: str = "error",
    template: str | None = None,
    param_dtype: str = "auto",
) -> Path:
    """Score `pairs_in` with the model in `checkpoint_dir`; write `pairs_out` (default: <stem>.ref.jsonl).

    Use the same `max_seq_len`, `overlong` and dtype as the DPO run that will read the file. Works in a
    plain process or under torchrun (then call it on every rank). Pairs dropped by the length limit are
    not written. Returns the output path.
    """

    pairs_out = Path(pairs_out) if pairs_out is not None else default_reference_path(pairs_in)
    info = D.init_distributed(device)
    try:
        tokenizer = Tokenizer.from_dir(checkpoint_dir, template)
        pairs, _ = load_dpo(
            pairs_in, tokenizer, max_seq_len=max_seq_len, overlong=overlong, on_bad_row=on_bad_row,
            shard=(info.rank, info.world_size), gather=lambda obj: D.all_gather_objects(obj, info),
        )  # fmt: skip

        lm = build_lm(
            read_model_config(checkpoint_dir), info, init_dir=checkpoint_dir, param_dtype=param_dtype
        )
        scores = score_pairs(lm, pairs, info, batch_size=batch_size, pad_id=tokenizer.pad_id)
        if info.is_main:
            attach_and_write(pairs, scores, pairs_in, pairs_out)
        D.barrier(info)
    finally:
        D.shutdown(info)
    return pairs_out
