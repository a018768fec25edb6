// Top-k / top-p token sampling without a full sort of the vocabulary (CPU), and the op's schema.
//
// Semantics (identical to srlm_fast/sampling.py::sample_torch, which is the specification):
//   x_i = logit_i / T (float64); T <= 0 (or NaN) selects greedy argmax of the raw logits (first maximum).
//   top-k (0 < k < V): keep x_i >= v_k, the k-th largest value (ties at the boundary are all kept).
//   top-p (p < 1): with w_i = exp(x_i - max x) over the top-k set and Z = sum w, keep x_i >= t where t is the
//     largest kept value whose "mass at or above it" M(t) = sum_{x_j >= t} w_j reaches p * Z (the smallest
//     head of the distribution holding probability p; boundary ties all kept). If rounding keeps M below
//     p * Z everywhere, the whole top-k set is kept.
//   sampling: one uniform u in [0, 1) per row from a counter-based hash of (seed, step) (splitmix64 mix,
//     bit-identical to the torch path), target = u * W with W = sum of kept w in vocabulary order; the token
//     is the first kept index i (vocabulary order) whose inclusive running sum exceeds the target. Summing in
//     float64 and in vocabulary order, the same order torch.cumsum uses, makes the two paths agree except
//     when u lands within ~1e-15 relative of a CDF boundary (exp may differ by an ulp between libm and Sleef).
//
// Algorithm and cost per row (V = vocabulary, n = size of the top-k set, all float64):
//   x = logit / T once into a buffer, O(V).
//   top-k: selection of the k largest, no sort of the vocabulary. Small k (8k <= V): heap select
//     (std::partial_sort) costs ~V well-predicted comparisons plus O(k log k log(V/k)) heap updates; large k:
//     introselect (std::nth_element), expected O(V).
//   top-p: the reference decision is made on the sequential float64 sum of the weights in descending
//     order (torch.cumsum over a sorted head). First the 64 largest kept values are selected and sorted
//     and their masses accumulated in that order: a peaked distribution (the usual LM case) stops here,
//     O(V). Otherwise (a flat distribution) no head is sorted: one pass buckets the kept weights by value
//     (d = max - x, uniform buckets, n/4 of them, at most 2048), the running bucket mass locates the bucket where p * Z
//     is reached, and only that bucket's few values are gathered and sorted; the resulting prefix mass is
//     a different-order sum of the same float64 weights, so it is used only when it clears p * Z by a
//     rigorous rounding bound on both sides of the crossing (then the reference sum crosses at the same
//     rank, bit-identical result). O(V) with no extra exp. Uncertified (rounding within ~1e-12 of the
//     boundary; practically never): the exact search, a sorted head grown 8x at a time, O(V log V) at worst.
//   Z and the sampling walk: O(V) with one exp per top-k token; the exps are kept in a buffer.
//   Rows are independent, so at::parallel_for splits the batch across threads; each thread reuses three
//   float64 buffers of length V and one histogram.
//
// The CUDA twin (sampling_cuda.cu) registers the CUDA kernel of the same op; the schema lives here.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <vector>

namespace srlm_sampling {
namespace {

// splitmix64's output function; the torch path (sampling.py::_mix64) reproduces it with wrapping int64 ops.
inline uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

constexpr uint64_t kGolden = 0x9E3779B97F4A7C15ULL;
constexpr uint64_t kSeedSalt = 0x5851F42D4C957F2DULL;

// One uniform double in [0, 1) per (seed, step): a splitmix64 stream keyed by mix64(seed ^ salt).
inline double uniform01(int64_t seed, int64_t step) {
  const uint64_t key = mix64(static_cast<uint64_t>(seed) ^ kSeedSalt);
  const uint64_t h = mix64(key + kGolden * static_cast<uint64_t>(step));
  return static_cast<double>(h >> 11) * (1.0 / 9007199254740992.0);  // 53 random bits / 2^53
}

constexpr double kNegInf = -std::numeric_limits<double>::infinity();

// The `c` largest values of cand[0:n) sorted descending into cand[0:c). A small head uses a heap select
// (std::partial_sort: one well-predicted comparison per element once the heap is warm, so ~V work); a
// large one uses introselect plus a sort of the head.
void select_head(std::vector<double>& cand, int64_t n, int64_t c) {
  auto first = cand.begin();
  if (c * 8 <= n) {
    std::partial_sort(first, first + c, first + n, std::greater<double>());
  } else {
    if (c < n) std::nth_element(first, first + (c - 1), first + n, std::greater<double>());
    std::sort(first, first + c, std::greater<double>());
  }
}

// Walk the descending head cand[0:c): the first prefix whose mass (sequential float64 sum of exp(x - m),
// the order torch.cumsum uses) reaches `need` ends at value t; thr = max(thr, t). False if none does.
bool head_threshold(const std::vector<double>& cand, int64_t c, double m, double need, double& thr) {
  double mass = 0.0;
  for (int64_t r = 0; r < c; ++r) {
    mass += std::exp(cand[r] - m);
    if (mass >= need) {  // boundary ties (x == t) are all kept by the caller's x >= thr
      thr = std::max(thr, cand[r]);
      return true;
    }
  }
  return false;
}

// Top-p threshold without sorting the head, for flat distributions. The reference decision is made on
// S_r, the sequential float64 sum of the r largest weights in descending order. Here the kept values are
// bucketed by d = m - x (uniform width; monotone in x, so every bucket is a contiguous run of ranks and
// ties share a bucket), the bucket masses are summed, and only the bucket where the running mass reaches
// p * Z is gathered and sorted; walking it gives P_r, a float64 sum of the same weights in another
// order. A float64 sum of nonnegative terms in any tree is within gamma_h * (true sum) of the true sum, h the
// roundings a term goes through: h <= n for S_r, h <= 2n + NB + 2 for P_r (bin chain, bin pair, bucket
// chain, in-bucket walk), and the true prefix mass is at most Z <= z (1 + gamma_n); so
// |P_r - S_r| <= (3n + NB + 2) u z (1 + tiny), u = 2^-53, and delta below is over 4 (n + NB + 16) u z. The
// result is used only when P crosses need with a margin of delta on both sides (then S crosses at the same
// rank); ties share a bucket, so the crossing value is the reference's. Returns 1 (found, thr updated), 0 (certainly never
// reached: keep the whole top-k set), -1 (not certified: the caller runs the exact search).
int histogram_threshold(const std::vector<double>& xs, const std::vector<double>& w, int64_t V, double thr_k,
                        double m, int64_t n_kept, double need, double z, std::vector<double>& hist,
                        std::vector<double>& cand, double& thr) {
  const int64_t nb = std::min<int64_t>(2048, std::max<int64_t>(64, n_kept / 4));  // 32 KiB of bins
  double lo = m;  // smallest finite kept value
  for (int64_t i = 0; i < V; ++i) {
    const double x = xs[i];
    if (x >= thr_k && x < lo && x > kNegInf) lo = x;
  }
  const double range = m - lo;
  const double inv_h = (range > 0.0 && std::isfinite(range)) ? static_cast<double>(nb) / range : 0.0;
  // Monotone non-increasing in x; -inf (d = inf) and NaN land in the last bucket.
  auto bucket = [m, inv_h, nb](double x) -> int64_t {
    const double q = (m - x) * inv_h;
    return q < static_cast<double>(nb) ? static_cast<int64_t>(q) : nb - 1;
  };
  // Two interleaved histograms (even / odd tokens) halve the store-to-load chains when neighbours share a
  // bucket. Branch-free: a token outside the top-k set has w = 0 and adds +0.0 wherever it lands.
  hist.assign(2 * nb, 0.0);
  for (int64_t i = 0; i < V; ++i) hist[2 * bucket(xs[i]) + (i & 1)] += w[i];
  const double delta = static_cast<double>(nb + n_kept + 16) * std::ldexp(1.0, -51) * z;
  double acc = 0.0;
  int64_t bstar = -1;
  for (int64_t b = 0; b < nb; ++b) {
    const double hb = hist[2 * b] + hist[2 * b + 1];
    if (acc + hb >= need) {
      bstar = b;
      break;
    }
    acc += hb;
  }
  if (bstar < 0) return acc < need - delta ? 0 : -1;
  int64_t j = 0;
  for (int64_t i = 0; i < V; ++i) {
    if (bucket(xs[i]) == bstar && xs[i] >= thr_k) cand[j++] = xs[i];
  }
  std::sort(cand.begin(), cand.begin() + j, std::greater<double>());
  double mass = acc;
  for (int64_t r = 0; r < j; ++r) {
    const double prev = mass;
    mass += std::exp(cand[r] - m);
    if (mass >= need) {
      if (!(prev < need - delta && mass >= need + delta)) return -1;
      thr = std::max(thr, cand[r]);
      return 1;
    }
  }
  return -1;
}

int64_t sample_row(const float* logits, int64_t V, double T, int64_t k, double p, double u,
                   std::vector<double>& xs, std::vector<double>& w, std::vector<double>& cand,
                   std::vector<double>& hist) {
  if (!(T > 0.0)) {  // greedy: first maximum of the raw logits, like torch.argmax
    int64_t best = 0;
    for (int64_t i = 1; i < V; ++i) {
      if (logits[i] > logits[best]) best = i;
    }
    return best;
  }
  // Division (not multiplication by 1/T) matches torch's `logits.double() / T` bit for bit.
  xs.resize(V);
  double* x = xs.data();
  for (int64_t i = 0; i < V; ++i) x[i] = static_cast<double>(logits[i]) / T;  // vectorises
  // The maximum does not depend on the order of comparisons: four independent chains, kept in registers.
  double m0 = kNegInf, m1 = kNegInf, m2 = kNegInf, m3 = kNegInf;
  int64_t i4 = 0;
  for (; i4 + 4 <= V; i4 += 4) {
    m0 = std::max(m0, x[i4]);
    m1 = std::max(m1, x[i4 + 1]);
    m2 = std::max(m2, x[i4 + 2]);
    m3 = std::max(m3, x[i4 + 3]);
  }
  for (; i4 < V; ++i4) m0 = std::max(m0, x[i4]);
  const double m = std::max(std::max(m0, m1), std::max(m2, m3));

  // Top-k threshold by selection, not sorting.
  double thr = kNegInf;
  cand.resize(V);
  if (k > 0 && k < V) {
    std::copy(xs.begin(), xs.end(), cand.begin());
    select_head(cand, V, k);
    thr = cand[k - 1];
  }

  // Unnormalised probabilities of the top-k set.
  w.resize(V);
  double z = 0.0;
  int64_t n_kept = 0;
  for (int64_t i = 0; i < V; ++i) {
    if (xs[i] >= thr) {
      w[i] = std::exp(xs[i] - m);
      z += w[i];
      cand[n_kept++] = xs[i];  // the top-p candidates (top-k set)
    } else {
      w[i] = 0.0;
    }
  }

  if (p < 1.0) {
    const double need = p * z;
    const double thr_k = thr;
    // 1. The sorted head of 64: enough for a peaked distribution, exact by construction.
    // Each weight is at most exp(0) = 1, so (rounding being monotone) the head's mass is at most c: when
    // need > c the head cannot reach it and its selection is skipped (a flat distribution).
    int64_t c = std::min<int64_t>(n_kept, 64);
    bool found = false;
    if (!(need > static_cast<double>(c))) {
      select_head(cand, n_kept, c);
      found = head_threshold(cand, c, m, need, thr);
    }
    // 2. A flatter one: histogram of the mass by value, sort only the boundary bucket, certify the result.
    int decided = (found || c == n_kept) ? 1 : histogram_threshold(xs, w, V, thr_k, m, n_kept, need, z, hist,
                                                                   cand, thr);
    // 3. Uncertified (the mass comes within rounding of p * Z near the boundary; or bucketing degenerated):
    //    the exact growing sorted head, the reference order of summation.
    if (decided < 0) {
      while (true) {
        c = std::min<int64_t>(n_kept, c * 8);
        // Refill in vocabulary order: after a heap select the tail holds the evicted values in rising
        // order, which would make the next heap select quadratic-ish (measured 20x slower at V=128k).
        int64_t j = 0;
        for (int64_t i = 0; i < V; ++i) {
          if (xs[i] >= thr_k) cand[j++] = xs[i];
        }
        select_head(cand, n_kept, c);
        // not found at c == n_kept: rounding; keep the whole top-k set
        if (head_threshold(cand, c, m, need, thr) || c == n_kept) break;
      }
    }
  }

  // Inverse CDF in vocabulary order over the kept set.
  // Branch-free (a flat top-p set makes the keep test unpredictable): a vectorisable pass writes the kept
  // weights (0 elsewhere) into `cdf`, then one plain pass turns them into the running sum in place. Adding
  // +0.0 for a dropped token leaves the nonnegative sum bit-identical, and the sum grows only at kept
  // tokens, so the first index whose sum exceeds the target (a binary search) is a kept one: the walk's
  // answer.
  double* __restrict cdf = cand.data();  // cand (length V) is free once the threshold is known
  const double* __restrict wp = w.data();
  const double* __restrict xp = xs.data();
  for (int64_t i = 0; i < V; ++i) {
    const double wi = wp[i];  // unconditional loads let the select become a mask
    cdf[i] = xp[i] >= thr ? wi : 0.0;
  }
  int64_t last = V - 1;
  while (last >= 0 && !(cdf[last] > 0.0)) --last;
  double total = 0.0;
  for (int64_t i = 0; i <= last; ++i) {
    total += cdf[i];
    cdf[i] = total;
  }
  const double target = u * total;
  const int64_t hit = std::upper_bound(cdf, cdf + (last + 1), target) - cdf;
  if (hit <= last) return hit;
  return last;  // u * total rounded up to total: the last kept token, as in the torch path
}

at::Tensor sample_cpu(const at::Tensor& logits, const at::Tensor& temperature, const at::Tensor& top_k,
                      const at::Tensor& top_p, const at::Tensor& seeds, const at::Tensor& steps) {
  TORCH_CHECK(logits.dim() == 2, "srlm_sampling.sample: logits must be (B, V), got ", logits.sizes());
  TORCH_CHECK(logits.scalar_type() == at::kFloat, "srlm_sampling.sample: CPU logits must be float32");
  const int64_t B = logits.size(0);
  const int64_t V = logits.size(1);
  TORCH_CHECK(V > 0, "srlm_sampling.sample: empty vocabulary");
  auto check = [B](const at::Tensor& t, at::ScalarType dt, const char* name) {
    TORCH_CHECK(t.dim() == 1 && t.size(0) == B && t.scalar_type() == dt && t.is_contiguous(),
                "srlm_sampling.sample: ", name, " must be a contiguous (B,) tensor of ", dt);
  };
  check(temperature, at::kDouble, "temperature");
  check(top_k, at::kLong, "top_k");
  check(top_p, at::kDouble, "top_p");
  check(seeds, at::kLong, "seeds");
  check(steps, at::kLong, "steps");

  const at::Tensor lg = logits.contiguous();
  at::Tensor out = at::empty({B}, logits.options().dtype(at::kLong));
  const float* lp = lg.data_ptr<float>();
  const double* tp = temperature.data_ptr<double>();
  const int64_t* kp = top_k.data_ptr<int64_t>();
  const double* pp = top_p.data_ptr<double>();
  const int64_t* sp = seeds.data_ptr<int64_t>();
  const int64_t* stp = steps.data_ptr<int64_t>();
  int64_t* op = out.data_ptr<int64_t>();

  // A row costs O(V): let small vocabularies batch several rows per task.
  const int64_t grain = std::max<int64_t>(1, 16384 / V);
  at::parallel_for(0, B, grain, [&](int64_t begin, int64_t end) {
    std::vector<double> xs, w, cand, hist;
    for (int64_t b = begin; b < end; ++b) {
      op[b] = sample_row(lp + b * V, V, tp[b], kp[b], pp[b], uniform01(sp[b], stp[b]), xs, w, cand, hist);
    }
  });
  return out;
}

at::Tensor uniforms_cpu(const at::Tensor& seeds, const at::Tensor& steps) {
  TORCH_CHECK(seeds.sizes() == steps.sizes() && seeds.scalar_type() == at::kLong &&
                  steps.scalar_type() == at::kLong,
              "srlm_sampling.uniforms: seeds and steps must be int64 tensors of one shape");
  const at::Tensor s = seeds.contiguous();
  const at::Tensor t = steps.contiguous();
  at::Tensor out = at::empty(s.sizes(), s.options().dtype(at::kDouble));
  const int64_t* sp = s.data_ptr<int64_t>();
  const int64_t* tp = t.data_ptr<int64_t>();
  double* op = out.data_ptr<double>();
  for (int64_t i = 0; i < s.numel(); ++i) op[i] = uniform01(sp[i], tp[i]);
  return out;
}

}  // namespace

TORCH_LIBRARY(srlm_sampling, m) {
  m.def(
      "sample(Tensor logits, Tensor temperature, Tensor top_k, Tensor top_p, Tensor seeds, Tensor steps) "
      "-> Tensor");
  m.def("uniforms(Tensor seeds, Tensor steps) -> Tensor");
}

TORCH_LIBRARY_IMPL(srlm_sampling, CPU, m) {
  m.impl("sample", &sample_cpu);
  m.impl("uniforms", &uniforms_cpu);
}

}  // namespace srlm_sampling
