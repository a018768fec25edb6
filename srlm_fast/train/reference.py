"""DPO reference log-probs, computed once before training so no reference model sits in memory.

For every pair, the reference model's summed log-probs of the chosen and rejected responses (the same
fused kernels and the same tokenisation and length limits as training) are written beside the pairs as
`ref_chosen_logp`, `ref_rejected_logp`, with `ref_chosen_tokens`, `ref_rejected_tokens` (the number of
target tokens they sum over; training checks them, so a changed tokenizer or `max_seq_len` is an error,
not a silent mismatch). Output files are written atomically.

Provenance. Beside every file written here lies `<file>.provenance.json`: the SHA-256 of the source pairs, a
fingerprint of the reference model (config, weights, tokenizer), the settings the values depend on
(`max_seq_len`, `overlong`, `template`; the dtype is recorded) and the SHA-256 of the written file. Whoever
reuses the file (`srlm dpo`, the loop) checks it against the current inputs: a file computed from other
pairs, by another model or with other settings, or edited since, is recomputed or refused, never trained on.

Under torchrun each rank scores its own slice of the pairs on the sharded model; every rank makes the same
number of forward calls (FSDP's all-gathers run in lockstep) and rank 0 writes the file.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import torch

from srlm_fast import distributed as D
from srlm_fast.device import resolve_dtype
from srlm_fast.io import (
    DataError,
    check_output,
    directory_fingerprint,
    file_sha256,
    iter_lines,
    looks_like_jsonl,
    read_json,
    read_jsonl,
    write_json_atomic,
    write_jsonl_atomic,
)
from srlm_fast.model.checkpoint import read_model_config
from srlm_fast.model.tokenizer import Tokenizer
from srlm_fast.progress import Progress
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
    progress = Progress("reference log-probs", enabled=info.is_main, unit="pairs")
    progress.add_total(n)
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
        progress.update(
            min(n, (i + 1) * batch_size * info.world_size) - progress.done
        )  # all ranks move alike
    progress.close()
    lm.train(was_training)
    D.reshard(lm)
    gathered = D.all_gather_objects(results, info)
    return [x for part in gathered for x in part]


PROVENANCE_SUFFIX = ".provenance.json"
PROVENANCE_KIND = "srlm-dpo-reference-logprobs"
MODEL_FILES = ("config.json", "*.safetensors", "model.safetensors.index.json", "tokenizer.json")
# What the values depend on; a difference in any of these means other numbers.
DEPENDS_ON = ("max_seq_len", "overlong", "template")


def provenance_path(ref_path: str | os.PathLike) -> Path:
    p = Path(ref_path)
    return p.with_name(p.name + PROVENANCE_SUFFIX)


def model_fingerprint(checkpoint_dir: str | os.PathLike) -> str:
    """What identifies a reference model: its config, weights and tokenizer (see `io.file_fingerprint`)."""
    return directory_fingerprint(checkpoint_dir, MODEL_FILES)


def reference_provenance(
    pairs_in: str | os.PathLike, checkpoint_dir: str | os.PathLike, settings: dict
) -> dict:
    """The record of what reference log-probs of `pairs_in` by `checkpoint_dir` with `settings` came from."""
    return {
        "kind": PROVENANCE_KIND,
        "version": 1,
        "source": {"path": str(pairs_in), "sha256": file_sha256(pairs_in)},
        "model": {"path": str(checkpoint_dir), "fingerprint": model_fingerprint(checkpoint_dir)},
        "settings": dict(settings),
    }


def write_provenance(ref_path: Path, record: dict) -> None:
    write_json_atomic(provenance_path(ref_path), {**record, "output_sha256": file_sha256(ref_path)})


def provenance_mismatch(ref_path: Path, *, source: Path | None, checkpoint_dir, settings: dict) -> str | None:
    """Why the reference log-probs in `ref_path` do not belong to these inputs (None: they do, or there is no
    provenance record to check; then the caller falls back to the row checks). `source=None` checks a file that
    is itself the training data: it must be unchanged since it was written."""
    record_path = provenance_path(ref_path)
    if not record_path.is_file():
        return None
    try:
        rec = read_json(record_path)
    except ValueError as e:
        return f"its provenance record is unreadable ({e})"
    if not isinstance(rec, dict) or rec.get("kind") != PROVENANCE_KIND:
        return f"{record_path} is not a provenance record of reference log-probs"
    if rec.get("output_sha256") != file_sha256(ref_path):
        return "the file changed after its reference log-probs were computed"
    if source is not None and (rec.get("source") or {}).get("sha256") != file_sha256(source):
        return f"they were computed from other pairs than {source} (its contents differ)"
    model = rec.get("model") or {}
    if model.get("fingerprint") != model_fingerprint(checkpoint_dir):
        return f"they were computed by another model ({model.get('path')}), not {checkpoint_dir}"
    saved = rec.get("settings") or {}
    changed = [k for k in DEPENDS_ON if saved.get(k) != settings.get(k)]
    if changed:
        return "they were computed with other " + ", ".join(
            f"{k} ({saved.get(k)!r}, now {settings.get(k)!r})" for k in changed
        )
    return None


def rows_mismatch(ref_path: Path, source: Path) -> str | None:
    """For a file without a provenance record (written by an older version): do its rows, less the reference
    fields, appear in `source` in the same order (pairs dropped by the length limit are absent)?"""
    ref_keys = ("ref_chosen_logp", "ref_rejected_logp", "ref_chosen_tokens", "ref_rejected_tokens")
    src_rows = read_jsonl(source, on_error="skip")[0]
    j = 0
    for i, row in enumerate(read_jsonl(ref_path, on_error="skip")[0]):
        plain = {k: v for k, v in row.items() if k not in ref_keys}
        while j < len(src_rows) and src_rows[j] != plain:
            j += 1
        if j == len(src_rows):
            return f"its row {i + 1} is not a pair of {source} (in order)"
        j += 1
    return None


def attach_and_write(
    pairs: Sequence[TokenizedPair],
    scores: Sequence[tuple[float, float]],
    pairs_in: str | os.PathLike,
    pairs_out: Path,
    provenance: dict | None = None,
) -> None:
    """Set the pairs' reference log-probs and write the scored rows (the source rows plus ref fields), then
    the provenance record when one is given."""
    lines = {n: text for n, text, _ in iter_lines(pairs_in)}
    rows = []
    for pair, (c, r) in zip(pairs, scores, strict=True):
        pair.ref_chosen_logp, pair.ref_rejected_logp = c, r
        if lines.get(pair.line) is None:
            raise DataError(f"{pairs_in}:{pair.line}: changed while being scored")
        row = json.loads(lines[pair.line])
        row.update(
            ref_chosen_logp=c,
            ref_rejected_logp=r,
            ref_chosen_tokens=pair.chosen_n,
            ref_rejected_tokens=pair.rejected_n,
        )
        rows.append(row)
    write_jsonl_atomic(pairs_out, rows)
    if provenance is not None:
        write_provenance(pairs_out, provenance)


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
    overwrite: bool = False,
) -> Path:
    """Score `pairs_in` with the model in `checkpoint_dir`; write `pairs_out` (default: <stem>.ref.jsonl) and
    its provenance record.

    Use the same `max_seq_len`, `overlong` and dtype as the DPO run that will read the file. Works in a
    plain process or under torchrun (then call it on every rank). Pairs dropped by the length limit are
    not written. An existing `pairs_out` is replaced only with `overwrite` (and never when it is the input).
    Returns the output path.
    """
    if isinstance(max_seq_len, bool) or not isinstance(max_seq_len, int) or max_seq_len < 2:
        raise ValueError(f"max_seq_len must be an integer >= 2, got {max_seq_len!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    pairs_out = Path(pairs_out) if pairs_out is not None else default_reference_path(pairs_in)
    if not Path(pairs_in).is_file():
        raise FileNotFoundError(f"{pairs_in}: no such file")
    check_output(
        pairs_out, kind="JSONL file", overwrite=overwrite, inputs=[pairs_in], is_kind=looks_like_jsonl
    )
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
            settings = {"max_seq_len": max_seq_len, "overlong": overlong, "template": tokenizer.template.name,
                        "dtype": str(resolve_dtype(param_dtype, info.device)).removeprefix("torch.")}  # fmt: skip
            record = reference_provenance(pairs_in, checkpoint_dir, settings)
            attach_and_write(pairs, scores, pairs_in, pairs_out, provenance=record)
        D.barrier(info)
    finally:
        D.shutdown(info)
    return pairs_out
