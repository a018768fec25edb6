"""The model against itself: KV-cache decoding, padding, packing and every attention backend."""

import dataclasses

import pytest
import torch

from srlm_fast.model.attention import available_backends
from srlm_fast.model.llama import CacheView, KVCache
from tests.helpers import tiny_model

ATOL = 1e-5


def test_forward_returns_hidden_states_and_logits_use_lm_head():
    model = tiny_model()
    x = torch.randint(0, 123, (2, 7))
    hidden = model(x)
    assert hidden.shape == (2, 7, 64)
    torch.testing.assert_close(model.logits(x), hidden @ model.lm_head.weight.T)


@pytest.mark.parametrize("backend", [b for b in available_backends() if b != "reference"])
@pytest.mark.parametrize("layout", ["causal", "padded", "packed"])
def test_backends_agree_with_reference(backend, layout):
    model = tiny_model()
    x = torch.randint(0, 123, (3, 11))
    kwargs = {}
    if layout == "padded":
        mask = torch.ones(3, 11, dtype=torch.long)
        mask[0, :4] = 0  # left padding
        mask[1, 8:] = 0  # right padding
        kwargs["attention_mask"] = mask
    elif layout == "packed":
        kwargs["doc_ids"] = torch.tensor([[0] * 4 + [1] * 7, [0] * 11, [0, 0, 1, 1, 1, 2, 2, 2, 2, 3, 3]])
    model.attn_backend = "reference"
    expected = model.logits(x, **kwargs)
    model.attn_backend = backend
    torch.testing.assert_close(model.logits(x, **kwargs), expected, atol=ATOL, rtol=0)


@pytest.mark.parametrize("layout", ["padded", "packed", "cache"])
def test_masked_gqa_folded_into_mha_equals_reference(layout):
    """The CUDA route for masked grouped-query attention (query groups folded into the query axis), checked on
    the CPU against the materialising reference."""
    from srlm_fast.model import attention as A

    g = torch.Generator().manual_seed(0)
    B, H, Hkv, T, S, Dh = 3, 8, 2, 5, 9, 16
    q, k, v = (torch.randn(B, h, t, Dh, generator=g) for h, t in ((H, T), (Hkv, S), (Hkv, S)))
    if layout == "cache":
        lay = A.cache_layout(torch.tensor([[4, 5, 6, 7, 8], [2, 3, 4, 5, 6], [4, 5, 6, 7, 8]]), S)
    else:
        ids = torch.tensor([[0] * 4 + [1] * 5, [0] * 9, [0, 0, 1, 1, 1, 2, 2, 2, 3]])
        lay = A.packed_layout(ids) if layout == "packed" else A.padded_layout((ids > 0).long())
        q = torch.randn(B, H, S, Dh, generator=g)  # self-attention: T = S
    torch.testing.assert_close(A.masked_gqa_as_mha(q, k, v, lay.mask), A.reference_attention(q, k, v, lay))


def test_padded_rows_equal_each_sequence_alone():
    model = tiny_model()
    seqs = [torch.randint(0, 123, (n,)) for n in (9, 4, 6)]
    T = max(len(s) for s in seqs)
    for side in ("left", "right"):
        batch = torch.zeros(3, T, dtype=torch.long)
        mask = torch.zeros(3, T, dtype=torch.long)
        for i, s in enumerate(seqs):
            sl = slice(T - len(s), T) if side == "left" else slice(0, len(s))
            batch[i, sl], mask[i, sl] = s, 1
        logits = model.logits(batch, attention_mask=mask)
        for i, s in enumerate(seqs):
            sl = slice(T - len(s), T) if side == "left" else slice(0, len(s))
            torch.testing.assert_close(logits[i, sl], model.logits(s[None])[0], atol=ATOL, rtol=0)
        assert torch.isfinite(logits).all()  # padding rows must not produce NaN


def test_packed_documents_equal_documents_alone():
    model = tiny_model()
    docs = [torch.randint(0, 123, (n,)) for n in (5, 1, 8, 3)]
    packed = torch.cat(docs)[None]
    doc_ids = torch.cat([torch.full((len(d),), i) for i, d in enumerate(docs)])[None]
    logits = model.logits(packed, doc_ids=doc_ids)[0]
    start = 0
    for d in docs:
        torch.testing.assert_close(
            logits[start : start + len(d)], model.logits(d[None])[0], atol=ATOL, rtol=0
        )
        start += len(d)


def test_kv_cache_decoding_equals_full_forward_with_ragged_rows():
    model = tiny_model()
    lengths = [5, 2, 7]
    full = torch.randint(0, 123, (3, 12))
    cache = KVCache.allocate(model.config, batch=3, max_len=16, dtype=torch.float32, device="cpu")
    view = CacheView(cache, rows=None, kv_len=16)
    # Prefill a right-padded batch: each row's positions are 0..T-1; pads write slots that are
    # overwritten before they become visible.
    T0 = max(lengths)
    prefill_pos = torch.arange(T0).expand(3, T0)
    logits = model.logits(full[:, :T0], positions=prefill_pos, cache=view)
    for i, n in enumerate(lengths):
        torch.testing.assert_close(logits[i, :n], model.logits(full[i : i + 1, :n])[0], atol=ATOL, rtol=0)
    # Then one token per row at per-row positions.
    pos = torch.tensor(lengths)
    for _ in range(4):
        step = model.logits(full[torch.arange(3), pos][:, None], positions=pos[:, None], cache=view)
        for i in range(3):
            ref = model.logits(full[i : i + 1, : pos[i] + 1])[0, -1]
            torch.testing.assert_close(step[i, 0], ref, atol=ATOL, rtol=0)
        pos = pos + 1


def test_kv_cache_row_subset_and_short_kv_len():
    model = tiny_model()
    cache = KVCache.allocate(model.config, batch=4, max_len=32, dtype=torch.float32, device="cpu")
    seq = torch.randint(0, 123, (1, 6))
    rows = torch.tensor([2])
    model(seq[:, :5], positions=torch.arange(5)[None], cache=CacheView(cache, rows, kv_len=8))
    out = model.logits(seq[:, 5:], positions=torch.tensor([[5]]), cache=CacheView(cache, rows, kv_len=8))
    torch.testing.assert_close(out[0, 0], model.logits(seq)[0, -1], atol=ATOL, rtol=0)
    assert all(t[[0, 1, 3]].abs().sum() == 0 for t in cache.k)  # other rows untouched


def test_rms_norm_is_the_hf_formula_bit_for_bit():
    """fp32 takes the one-call `F.rms_norm`; it must equal HF's normalise-in-fp32-then-weight exactly, and reduced
    precision keeps HF's order (cast back before the weight)."""
    from srlm_fast.model.llama import RMSNorm

    norm = RMSNorm(256, eps=1e-5)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
    for dtype in (torch.float32, torch.bfloat16):
        x = (torch.randn(64, 7, 256) * 3).to(dtype)
        n = norm.to(dtype)
        x32 = x.float()
        want = n.weight * (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + 1e-5)).to(dtype)
        assert torch.equal(n(x), want), dtype


def test_tied_embeddings_share_the_matrix():
    model = tiny_model(tie_embeddings=True)
    assert model.lm_head is None and model.lm_head_weight is model.embed_tokens.weight


def test_too_long_sequence_is_a_clear_error():
    model = tiny_model(max_seq_len=16)
    with pytest.raises(ValueError, match="exceeds the model's max_seq_len=16"):
        model(torch.zeros(1, 17, dtype=torch.long))


def test_rope_stays_fp32_after_dtype_change():
    model = tiny_model().to(torch.bfloat16)
    assert model.rope_inv_freq.dtype == torch.float32


@pytest.mark.parametrize("prefix_len", [0, 1, 6])
def test_decode_attention_matmuls_equal_reference(prefix_len):
    """The CPU decode path (batched matmuls over strided cache views) and its cascade over a shared prefix, against
    the materialising reference with the same cache mask."""
    from srlm_fast.model import attention as A

    g = torch.Generator().manual_seed(1)
    B, H, Hkv, S_max, S, Dh = 4, 8, 2, 24, 13, 16
    positions = torch.tensor([[12], [6], [9], [prefix_len + 1]])  # ragged rows, all past the prefix
    k_cache, v_cache = (torch.randn(B, Hkv, S_max, Dh, generator=g) for _ in range(2))
    # Every row starts with the same prefix slots (what the generator's copies of the shared prefix give).
    pk, pv = (torch.randn(Hkv, prefix_len, Dh, generator=g) for _ in range(2))
    k_cache[:, :, :prefix_len], v_cache[:, :, :prefix_len] = pk, pv
    k, v = k_cache[:, :, :S], v_cache[:, :, :S]  # strided views, as the model passes them
    q = torch.randn(B, H, 1, Dh, generator=g)
    layout = A.cache_layout(positions, S, torch.float32)
    assert layout.bias is not None  # fp32 on the CPU: the matmul path
    want = A.reference_attention(q, k, v, layout)
    torch.testing.assert_close(A.decode_attention(q, k, v, layout.bias), want, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(A.attend_cache(q, k, v, layout, "sdpa"), want, rtol=1e-5, atol=1e-6)
    if prefix_len:
        cascade = A.attend_cache(q, k, v, layout, "sdpa", prefix=(pk, pv))
        torch.testing.assert_close(cascade, want, rtol=1e-5, atol=1e-6)


def test_decode_matmuls_only_where_they_win():
    from srlm_fast.model import attention as A

    pos = torch.tensor([[3], [5]])
    assert A.cache_layout(pos, 8, torch.float32).bias is not None
    assert A.cache_layout(pos, 8, torch.bfloat16).bias is None  # SDPA: its softmax accumulates in fp32
    assert A.cache_layout(torch.tensor([[3, 4]]), 8, torch.float32).bias is None  # prefill: SDPA
    assert A.cache_layout(pos, 8).bias is None


@pytest.mark.parametrize("backend", ["sdpa", "reference"])
def test_kv_cache_decoding_with_a_shared_prefix_equals_full_forward(backend):
    """`CacheView.prefix`: decode steps read the prefix every row shares from a one-row buffer (cascade attention
    with SDPA on the CPU, ignored by the reference): the logits equal the uncached full forward's."""
    model = tiny_model()
    model.attn_backend = backend
    P, tails = 6, [3, 1, 5]
    prefix_ids = torch.randint(0, 123, (1, P))
    full = torch.cat([prefix_ids.expand(3, P), torch.randint(0, 123, (3, 10))], dim=1)  # (3, P + 10)
    buf = KVCache.allocate(model.config, batch=1, max_len=P, dtype=torch.float32, device="cpu")
    model(prefix_ids, positions=torch.arange(P)[None], cache=CacheView(buf, None, P))
    cache = KVCache.allocate(model.config, batch=3, max_len=24, dtype=torch.float32, device="cpu")
    cache.copy_slots(slice(0, 3), slice(0, 1), P, source=buf)
    T0 = max(tails)
    model(
        full[:, P : P + T0], positions=(P + torch.arange(T0)).expand(3, T0), cache=CacheView(cache, None, 24)
    )
    pos = torch.tensor(tails) + P
    for _ in range(4):
        ids = full[torch.arange(3), pos][:, None]
        step = model.logits(ids, positions=pos[:, None], cache=CacheView(cache, None, 24, prefix=buf))
        for i in range(3):
            ref = model.logits(full[i : i + 1, : pos[i] + 1])[0, -1]
            torch.testing.assert_close(step[i, 0], ref, atol=ATOL, rtol=0)
        pos = pos + 1


def test_cache_view_survives_dataclasses_replace():
    # FSDP2 moves a forward's dataclass inputs with dataclasses.replace over their fields (the lockstep generation
    # mode runs the sharded model with a CacheView): the derived row index must follow the replaced rows.
    cache = KVCache([torch.zeros(3, 1, 4, 2)], [torch.zeros(3, 1, 4, 2)])
    view = CacheView(cache, None, 2)
    assert view.write_rows.flatten().tolist() == [0, 1, 2]
    # as torch's input mover does it: every field, each passed through (here: new rows)
    changes = {f.name: getattr(view, f.name) for f in dataclasses.fields(view)}
    moved = dataclasses.replace(view, **{**changes, "rows": torch.tensor([2, 0])})
    assert moved.write_rows.tolist() == [[2], [0]] and moved.kv_len == 2
