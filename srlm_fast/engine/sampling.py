"""Token sampling for the KV-cached generator: temperature, top-k, top-p, per row, counter-based randomness.

One call per decode step draws one token per row of a ``(B, V)`` logits batch. Every parameter is per row,
so rows belonging to different requests (greedy and sampled, different k / p / seeds) share a batch.

Semantics (the native C++/CUDA op in ``csrc/`` implements exactly this; `sample_torch` is the spec):

* ``x = logits / T`` in float64. ``T <= 0`` selects greedy argmax of the raw logits (first maximum).
* **top-k** (``0 < k < V``): keep ``x >= v_k``, the k-th largest value. Ties at the boundary are all kept
  (threshold semantics, as in HF's ``TopKLogitsWarper``), so exact ties can keep more than k tokens.
* **top-p** (``p < 1``): on the top-k set, with ``w = exp(x - max x)`` and ``Z = sum w``, keep
  ``x >= t`` where ``t`` is the largest kept value with ``M(t) = sum_{x_j >= t} w_j >= p * Z``: the
  smallest head of the distribution that holds probability ``p``, *including* the token that crosses ``p``
  (as in HF/vLLM), boundary ties all kept. ``p <= 0`` keeps only the maximum (and its ties).
* **Sampling** is inverse-CDF with one uniform ``u in [0, 1)`` per row: ``target = u * W`` (``W`` = sum of
  kept ``w``), the token is the first kept index, **in vocabulary order**, whose inclusive running sum
  exceeds ``target``. Vocabulary order (not probability order) lets the native op walk the CDF without a
  sort; the sums are float64 and sequential in both paths (``torch.cumsum`` on CPU is sequential), so the
  two paths return identical tokens unless ``u`` lands within ~1e-15 (relative) of a CDF boundary, where an
  ulp difference between libm's and Sleef's ``exp`` can decide. Same for ``M(t)`` against ``p * Z``.
* **Randomness is counter-based**: ``u = hash(seed, step)`` (the splitmix64 output mix, keyed by the seed,
  53 bits), implemented bit-identically with wrapping int64 torch ops and in C++/CUDA. No global generator
  is read or advanced: a request's tokens depend only on its own (seed, step), never on how requests were
  batched. Give the ``n`` samples of one request different seeds (e.g. ``seed + i``), and count ``step``
  from 0 at the first generated token.
* Rows must hold at least one finite logit; NaN logits are unsupported.

**Log-probs.** `token_logprobs` returns the log-probability of the chosen tokens under the *unmodified*
model distribution (temperature 1, no filtering): the quantity teacher-forced scoring and DPO use, so a
generated sequence's log-probs agree with re-scoring it later. `processed_logprobs` gives the log-prob
under the distribution actually sampled from (temperature-scaled, filtered, renormalised) for diagnostics.

``impl``: ``"auto"`` uses the native op when it builds (``srlm_fast.engine.native``), else the torch path;
``"native"`` requires it; ``"torch"`` forces the pure-torch path. `sample_sorted` is the plain
sort-based reference (tests and benchmarks only).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from srlm_fast.engine import native

Impl = Literal["auto", "native", "torch"]

# splitmix64 constants as signed int64 (torch has no uint64 arithmetic); products wrap like uint64.
_GOLDEN = 0x9E3779B97F4A7C15 - (1 << 64)
_SEED_SALT = 0x5851F42D4C957F2D
_MUL1 = 0xBF58476D1CE4E5B9 - (1 << 64)
_MUL2 = 0x94D049BB133111EB - (1 << 64)


def _lsr(x: Tensor, k: int) -> Tensor:
    """Logical right shift of int64 (torch's ``>>`` is arithmetic): clear the sign-extended bits."""
    return (x >> k) & ((1 << (64 - k)) - 1)


def _mix64(z: Tensor) -> Tensor:
    """splitmix64's output function on int64 tensors, bit-identical to the uint64 C++ version."""
    z = (z ^ _lsr(z, 30)) * _MUL1
    z = (z ^ _lsr(z, 27)) * _MUL2
    return z ^ _lsr(z, 31)


def uniforms(seeds: Tensor, steps: Tensor) -> Tensor:
    """The uniform in ``[0, 1)`` (float64) that row ``(seed, step)`` uses; same shape as the inputs."""
    key = _mix64(seeds.to(torch.int64) ^ _SEED_SALT)
    h = _mix64(key + steps.to(torch.int64) * _GOLDEN)
    return _lsr(h, 11).to(torch.float64) * (1.0 / (1 << 53))  # 53 bits are exact in float64


def _row_param(
    value: Tensor | float | int | None, b: int, default: float, dtype: torch.dtype, device
) -> Tensor:
    """A contiguous ``(B,)`` tensor of ``dtype`` from a tensor, a Python scalar or None (= default)."""
    if value is None:
        value = default
    if not isinstance(value, Tensor):
        return torch.full((b,), value, dtype=dtype, device=device)
    if value.dim() == 0:
        value = value.expand(b)
    if value.shape != (b,):
        raise ValueError(f"per-row sampling parameter must have shape ({b},), got {tuple(value.shape)}")
    return value.to(device=device, dtype=dtype).contiguous()


def _params(logits: Tensor, temperature, top_k, top_p, seeds, steps) -> tuple[Tensor, ...]:
    if logits.dim() != 2 or logits.shape[1] == 0:
        raise ValueError(f"logits must be (B, V) with V > 0, got {tuple(logits.shape)}")
    if not logits.is_floating_point():
        raise TypeError(f"logits must be floating point, got {logits.dtype}")
    b, dev = logits.shape[0], logits.device
    return (
        _row_param(temperature, b, 1.0, torch.float64, dev),
        _row_param(top_k, b, 0, torch.int64, dev),
        _row_param(top_p, b, 1.0, torch.float64, dev),
        _row_param(seeds, b, 0, torch.int64, dev),
        _row_param(steps, b, 0, torch.int64, dev),
    )


def sample(
    logits: Tensor,
    *,
    temperature: Tensor | float,
    top_k: Tensor | int | None = None,
    top_p: Tensor | float | None = None,
    seeds: Tensor | int,
    steps: Tensor | int,
    impl: Impl = "auto",
) -> Tensor:
    """Draw one token per row of ``logits`` (B, V); returns int64 ``(B,)`` on the logits' device.

    Per-row parameters are ``(B,)`` tensors or scalars: ``temperature`` (``<= 0``: greedy), ``top_k``
    (``0`` or ``>= V``: off; None: off), ``top_p`` (``>= 1``: off; None: off), ``seeds`` and ``steps``
    (the counter the row's uniform is hashed from). See the module docstring for the exact semantics.
    """
    if impl not in ("auto", "native", "torch"):
        raise ValueError(f"impl must be 'auto', 'native' or 'torch', got {impl!r}")
    temperature, top_k, top_p, seeds, steps = _params(logits, temperature, top_k, top_p, seeds, steps)
    if impl != "torch":
        op = native.get_op(strict=impl == "native")
        if op is not None and (logits.device.type == "cpu" or native.has_cuda_kernel()):
            # The CPU kernel reads float32; the CUDA kernel reads float32/float16/bfloat16 directly.
            x = logits.float() if logits.device.type == "cpu" else logits
            return op.sample(x.contiguous(), temperature, top_k, top_p, seeds, steps)
        if impl == "native":
            raise RuntimeError(f"native sampling has no kernel for device {logits.device}")
    return _sample_torch(logits, temperature, top_k, top_p, seeds, steps)


def sample_torch(
    logits: Tensor,
    *,
    temperature: Tensor | float,
    top_k: Tensor | int | None = None,
    top_p: Tensor | float | None = None,
    seeds: Tensor | int,
    steps: Tensor | int,
) -> Tensor:
    """The pure-torch path of `sample` (no sort of the full vocabulary unless top-p needs it)."""
    return _sample_torch(logits, *_params(logits, temperature, top_k, top_p, seeds, steps))


def _keep_mask(x: Tensor, top_k: Tensor, top_p: Tensor) -> tuple[Tensor, Tensor]:
    """Kept tokens ``(B, V)`` bool and weights ``w = exp(x - max x)`` ``(B, V)`` float64 for scaled ``x``."""
    b, v = x.shape
    m = x.amax(dim=-1, keepdim=True)  # (B, 1)
    w = torch.exp(x - m)  # (B, V)
    # top-k: the k-th largest value is the threshold; off rows get -inf (everything kept).
    k_on = (top_k > 0) & (top_k < v)
    thr = torch.full((b,), float("-inf"), dtype=x.dtype, device=x.device)
    if bool(k_on.any()):
        kmax = int(torch.where(k_on, top_k, 1).max())
        vals = torch.topk(x, kmax, dim=-1).values  # (B, kmax), descending
        kth = vals.gather(1, (torch.where(k_on, top_k, 1) - 1).unsqueeze(1)).squeeze(1)
        thr = torch.where(k_on, kth, thr)
    keep = x >= thr.unsqueeze(1)
    p_on = top_p < 1.0
    if bool(p_on.any()):
        rows = p_on.nonzero().squeeze(1)  # only rows with top-p pay for the threshold search
        xk = torch.where(keep[rows], x[rows], float("-inf"))  # (R, V): top-k set only
        z = torch.where(keep[rows], w[rows], 0.0).sum(-1)  # (R,)
        need = top_p[rows] * z
        thr_p = torch.full_like(need, float("-inf"))
        # Grow a sorted head (topk = partial selection) until it holds p * Z; most rows stop at the first.
        c = min(v, 64)
        todo = torch.arange(rows.numel(), device=x.device)
        while todo.numel() > 0:
            if c == v:  # a full sort beats topk(k=V)
                vals = torch.sort(xk[todo], dim=-1, descending=True).values  # (R', V)
            else:
                vals = torch.topk(xk[todo], c, dim=-1).values  # (R', c), descending
            mass = torch.cumsum(torch.exp(vals - m[rows[todo]]), dim=-1)  # sequential, like C++
            hit = mass >= need[todo].unsqueeze(1)
            found = hit.any(-1)
            first = hit.to(torch.int8).argmax(-1)  # first prefix reaching p * Z
            thr_p[todo] = torch.where(found, vals.gather(1, first.unsqueeze(1)).squeeze(1), thr_p[todo])
            if c == v:
                break  # never reached (rounding): keep the whole top-k set
            todo = todo[~found]
            c = c * 8 if c * 8 * 16 <= v else v  # a head above V/16 is not worth another selection
        keep[rows] &= xk >= thr_p.unsqueeze(1)
    return keep, w


def _sample_torch(
    logits: Tensor, temperature: Tensor, top_k: Tensor, top_p: Tensor, seeds: Tensor, steps: Tensor
) -> Tensor:
    greedy = logits.argmax(dim=-1)  # first maximum, as the native op
    sampled_rows = temperature > 0
    if not bool(sampled_rows.any()):
        return greedy
    t = torch.where(sampled_rows, temperature, 1.0)
    x = logits.to(torch.float64) / t.unsqueeze(1)  # (B, V); division as in C++
    keep, w = _keep_mask(x, top_k, top_p)
    wk = torch.where(keep, w, 0.0)
    cdf = torch.cumsum(wk, dim=-1)  # (B, V) in vocabulary order
    target = uniforms(seeds, steps) * cdf[:, -1]
    tok = torch.searchsorted(cdf, target.unsqueeze(1), right=True).squeeze(1)  # first cdf > target
    # u * W may round up to W: take the last kept token, as the native op does.
    v = logits.shape[1]
    last = v - 1 - torch.flip(wk > 0, dims=[1]).to(torch.int8).argmax(-1)
    tok = torch.where(tok >= v, last, tok)
    return torch.where(sampled_rows, tok, greedy)


def sample_sorted(
    logits: Tensor,
    *,
    temperature: Tensor | float,
    top_k: Tensor | int | None = None,
    top_p: Tensor | float | None = None,
    seeds: Tensor | int,
    steps: Tensor | int,
) -> Tensor:
    """Plain reference that sorts the whole vocabulary (HF-style); same distribution as `sample`.

    It draws from the same filtered distribution, but walks the CDF in probability order, so individual
    tokens differ from `sample` for the same uniform: compare distributions, not tokens. Benchmarks use
    it as the "full sort" baseline.
    """
    temperature, top_k, top_p, seeds, steps = _params(logits, temperature, top_k, top_p, seeds, steps)
    return _sample_sorted(logits, temperature, top_k, top_p, seeds, steps)


def _sample_sorted(
    logits: Tensor, temperature: Tensor, top_k: Tensor, top_p: Tensor, seeds: Tensor, steps: Tensor
) -> Tensor:
    v = logits.shape[1]
    sampled_rows = temperature > 0
    x = logits.to(torch.float64) / torch.where(sampled_rows, temperature, 1.0).unsqueeze(1)
    vals, idx = torch.sort(x, dim=-1, descending=True)  # (B, V)
    k = torch.where((top_k > 0) & (top_k < v), top_k, v)
    keep = vals >= vals.gather(1, (k - 1).unsqueeze(1))  # top-k, boundary ties kept
    probs = torch.where(keep, torch.exp(vals - vals[:, :1]), 0.0)
    cum = torch.cumsum(probs, dim=-1)
    need = (top_p * cum[:, -1]).unsqueeze(1)
    hit = cum >= need
    first = hit.to(torch.int8).argmax(-1, keepdim=True)  # first prefix holding p
    # Never reached (rounding): keep the whole top-k set, as `sample` does.
    on = ((top_p < 1.0) & hit.any(-1)).unsqueeze(1)
    keep_p = torch.where(on, vals >= vals.gather(1, first), True)
    probs = torch.where(keep & keep_p, probs, 0.0)
    cdf = torch.cumsum(probs, dim=-1)
    target = (uniforms(seeds, steps) * cdf[:, -1]).unsqueeze(1)
    pos = torch.searchsorted(cdf, target, right=True).clamp_max(v - 1)
    tok = idx.gather(1, pos).squeeze(1)
    return torch.where(sampled_rows, tok, logits.argmax(dim=-1))


def filtered_probs(
    logits: Tensor,
    *,
    temperature: Tensor | float,
    top_k: Tensor | int | None = None,
    top_p: Tensor | float | None = None,
) -> Tensor:
    """The exact distribution `sample` draws from, ``(B, V)`` float64 (one-hot at the argmax for greedy)."""
    temperature, top_k, top_p, _, _ = _params(logits, temperature, top_k, top_p, None, None)
    sampled_rows = temperature > 0
    x = logits.to(torch.float64) / torch.where(sampled_rows, temperature, 1.0).unsqueeze(1)
    keep, w = _keep_mask(x, top_k, top_p)
    wk = torch.where(keep, w, 0.0)
    probs = wk / wk.sum(-1, keepdim=True)
    onehot = torch.nn.functional.one_hot(logits.argmax(-1), logits.shape[1]).to(probs.dtype)
    return torch.where(sampled_rows.unsqueeze(1), probs, onehot)


def token_logprobs(logits: Tensor, tokens: Tensor) -> Tensor:
    """Log-prob (float32, ``(B,)``) of ``tokens`` under the unmodified model distribution (T = 1, no filter)."""
    lp = torch.log_softmax(logits.float(), dim=-1)  # (B, V)
    return lp.gather(1, tokens.long().unsqueeze(1)).squeeze(1)


def top_logprobs(logits: Tensor, n: int) -> tuple[Tensor, Tensor]:
    """The ``n`` most likely tokens and their T = 1 log-probs: ``(values (B, n) float32, ids (B, n) int64)``."""
    lp = torch.log_softmax(logits.float(), dim=-1)
    return torch.topk(lp, n, dim=-1)


def processed_logprobs(
    logits: Tensor,
    tokens: Tensor,
    *,
    temperature: Tensor | float,
    top_k: Tensor | int | None = None,
    top_p: Tensor | float | None = None,
) -> Tensor:
    """Log-prob (float64, ``(B,)``) of ``tokens`` under the distribution actually sampled from.

    Temperature-scaled, filtered and renormalised; greedy rows give 0 for the argmax token.
    """
    p = filtered_probs(logits, temperature=temperature, top_k=top_k, top_p=top_p)
    return torch.log(p.gather(1, tokens.long().unsqueeze(1)).squeeze(1))
