"""Data pipeline: tokenisation with targets, packing, length limits, bad rows, deterministic rank split."""

from __future__ import annotations

import json

import pytest
import torch

from srlm_fast.io import DataError
from srlm_fast.model.llama import build_model
from srlm_fast.model.tokenizer import Tokenizer
from srlm_fast.train.data import (
    IGNORE_INDEX,
    BatchPlan,
    SFTDocument,
    collate_dpo,
    collate_sft,
    dpo_stream,
    load_dpo,
    load_sft,
    pack_documents,
    sft_stream,
    shift_targets,
)
from tests._train_fixtures import TEST_MODEL, make_workspace, one_thread

_one_thread = pytest.fixture(scope="module", autouse=True)(one_thread)


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    return make_workspace(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def tok(ws):
    return Tokenizer.from_dir(ws["init"])


def write(path, lines):
    path.write_text("".join(line + "\n" for line in lines))
    return path


def test_shift_targets_ignores_non_targets_and_the_document_end():
    ids = [10, 11, 12, 13, 14]
    mask = [False, False, True, True, False]
    assert shift_targets(ids, mask) == [IGNORE_INDEX, 12, 13, IGNORE_INDEX, IGNORE_INDEX]


def test_sft_targets_are_exactly_the_assistant_tokens(tmp_path, tok):
    path = write(tmp_path / "a.jsonl", [json.dumps({"prompt": "add 1 and 2", "response": "3"})])
    docs, stats = load_sft(path, tok, max_seq_len=64)
    ids, mask = tok.encode_chat(
        [{"role": "user", "content": "add 1 and 2"}, {"role": "assistant", "content": "3"}]
    )
    (doc,) = docs
    assert doc.ids == ids
    predicted = [doc.ids[i + 1] for i, t in enumerate(doc.targets) if t != IGNORE_INDEX]
    assert predicted == [t for t, m in zip(ids, mask) if m]  # "3" and the end-of-turn token
    assert doc.targets[-1] == IGNORE_INDEX
    assert stats.rows == 1 and stats.target_tokens == sum(mask)


def test_both_sft_formats_load(ws, tok):
    docs, stats = load_sft(ws["sft"], tok, max_seq_len=96)
    assert stats.rows == len(docs) == 48 and stats.bad_rows == 0


def test_length_limits_truncate_or_drop_and_are_counted(tmp_path, tok):
    long = {"prompt": "hi", "response": "red blue green " * 40}
    no_room = {"prompt": "cat dog " * 60, "response": "x"}  # the limit cuts every target away
    ok = {"prompt": "hi", "response": "ok"}
    path = write(tmp_path / "l.jsonl", [json.dumps(r) for r in (long, no_room, ok)])
    docs, stats = load_sft(path, tok, max_seq_len=32, overlong="truncate")
    assert (stats.truncated, stats.dropped, len(docs)) == (2, 1, 2)
    assert all(len(d.ids) <= 32 for d in docs)
    docs, stats = load_sft(path, tok, max_seq_len=32, overlong="drop")
    assert (stats.truncated, stats.dropped, len(docs)) == (0, 2, 1)


def test_bad_rows_are_reported_with_file_and_line(tmp_path, tok):
    good = json.dumps({"prompt": "a", "response": "b"})
    lines = [good, "", "{not json", json.dumps({"messages": [{"role": "bot", "content": "x"}]}), good]
    path = write(tmp_path / "bad.jsonl", lines)
    with pytest.raises(DataError, match=rf"{path}:3: not valid JSON"):
        load_sft(path, tok, max_seq_len=64)
    docs, stats = load_sft(path, tok, max_seq_len=64, on_bad_row="skip")
    assert len(docs) == 2 and stats.bad_rows == 2
    assert stats.errors[0].startswith(f"{path}:3:") and stats.errors[1].startswith(f"{path}:4: messages[0]")

    pairs = write(tmp_path / "p.jsonl", [json.dumps({"prompt": "a", "chosen": "b"})])
    with pytest.raises(DataError, match=rf"{pairs}:1: field 'rejected'"):
        load_dpo(pairs, tok, max_seq_len=64)
    half = write(
        tmp_path / "h.jsonl",
        [json.dumps({"prompt": "a", "chosen": "b", "rejected": "c", "ref_chosen_logp": -1})],
    )
    with pytest.raises(DataError, match=rf"{half}:1: give both"):
        load_dpo(half, tok, max_seq_len=64)


def test_reference_token_counts_are_checked(tmp_path, tok):
    row = {"prompt": "a", "chosen": "b", "rejected": "c", "ref_chosen_logp": -3.0, "ref_rejected_logp": -4.0}
    (pair,), _ = load_dpo(write(tmp_path / "ok.jsonl", [json.dumps(row)]), tok, max_seq_len=64)
    assert (pair.ref_chosen_logp, pair.ref_rejected_logp) == (-3.0, -4.0)
    row["ref_chosen_tokens"] = pair.chosen_n + 1
    with pytest.raises(DataError, match=r"bad.jsonl:1: ref_chosen_logp was computed over"):
        load_dpo(write(tmp_path / "bad.jsonl", [json.dumps(row)]), tok, max_seq_len=64)


def test_packing_keeps_documents_apart():
    docs = [SFTDocument([1] * 5, [2] * 5), SFTDocument([3] * 4, [4] * 4), SFTDocument([5] * 6, [6] * 6)]
    rows = pack_documents(docs, seq_len=10)
    assert [r.doc_ids for r in rows] == [[0] * 5 + [1] * 4, [0] * 6]
    batch = collate_sft(rows, pad_id=0)
    assert batch.input_ids.shape == (2, 9) and batch.doc_ids is not None
    assert batch.targets[1, 6:].eq(IGNORE_INDEX).all() and batch.doc_ids[1, 6:].eq(-1).all()
    assert batch.n_tokens == 15
    single = collate_sft(pack_documents(docs, seq_len=10, pack=False), pad_id=0)
    assert single.doc_ids is None and single.input_ids.shape == (3, 6)  # causal attention suffices


def test_packed_forward_equals_separate_documents(ws, tok):
    """Documents packed into one row see nothing of each other (positions restart, attention is blocked)."""
    docs, _ = load_sft(ws["sft"], tok, max_seq_len=96)
    rows = pack_documents(docs[:4], seq_len=256)
    assert len(rows) == 1
    model = build_model(TEST_MODEL, seed=0)
    batch = collate_sft(rows, tok.pad_id)
    with torch.no_grad():
        packed = model(batch.input_ids, doc_ids=batch.doc_ids)[0]
        start = 0
        for d in docs[:4]:
            alone = model(torch.tensor([d.ids]))[0]
            torch.testing.assert_close(packed[start : start + len(d.ids)], alone, atol=1e-5, rtol=1e-5)
            start += len(d.ids)


def test_dpo_collate_puts_chosen_rows_first(ws, tok):
    pairs, _ = load_dpo(ws["pairs"], tok, max_seq_len=96)
    batch = collate_dpo(pairs[:3], tok.pad_id, need_reference=False)
    assert batch.input_ids.shape[0] == 6
    assert batch.input_ids[0, : len(pairs[0].chosen_ids)].tolist() == pairs[0].chosen_ids
    assert batch.input_ids[3, : len(pairs[0].rejected_ids)].tolist() == pairs[0].rejected_ids
    with pytest.raises(DataError, match="reference"):
        collate_dpo(pairs[:3], tok.pad_id)


def test_order_is_deterministic_and_independent_of_world_size(ws, tok):
    docs, _ = load_sft(ws["sft"], tok, max_seq_len=96)

    def step_rows(world: int, accum: int, micro: int, step: int) -> list:
        stream = sft_stream(docs, 96, True, seed=3)
        out = []
        for rank in range(world):
            for mb in BatchPlan(micro, accum, world, rank).micro_batches(stream, step):
                out.extend(r.ids for r in mb)
        return out

    one = [step_rows(1, 1, 8, s) for s in range(6)]  # crosses epoch boundaries: ~10 rows per epoch
    assert one == [step_rows(2, 4, 1, s) for s in range(6)] == [step_rows(2, 1, 4, s) for s in range(6)]
    assert one != [step_rows(1, 1, 8, s) for s in range(1, 7)]
    assert sft_stream(docs, 96, True, seed=4).epoch(0) != sft_stream(docs, 96, True, seed=3).epoch(0)
    pairs, _ = load_dpo(ws["pairs"], tok, max_seq_len=96)
    stream = dpo_stream(pairs, seed=0)
    epoch0 = stream.rows(0, len(pairs))
    assert sorted(p.line for p in epoch0) == list(range(1, 25))
    assert [p.line for p in stream.rows(len(pairs), 2 * len(pairs))] != [p.line for p in epoch0]


def test_sharded_tokenisation_merges_to_the_full_data(ws, tok):
    """Each rank tokenises every world-th row; the exchanged shards give every rank the full list."""
    full, full_stats = load_sft(ws["sft"], tok, max_seq_len=40)
    sent = {}

    def gather_rank1(obj):
        sent[1] = obj
        return [obj, obj]  # rank 1's own merge is not checked here

    load_sft(ws["sft"], tok, max_seq_len=40, shard=(1, 2), gather=gather_rank1)
    docs, stats = load_sft(ws["sft"], tok, max_seq_len=40, shard=(0, 2), gather=lambda obj: [obj, sent[1]])
    assert [d.ids for d in docs] == [d.ids for d in full]
    assert (stats.rows, stats.truncated, stats.tokens) == (
        full_stats.rows,
        full_stats.truncated,
        full_stats.tokens,
    )
    assert full_stats.truncated > 0
    with pytest.raises(ValueError, match="gather"):
        load_dpo(ws["pairs"], tok, max_seq_len=96, shard=(0, 2))
