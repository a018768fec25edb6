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
//   top-p: threshold search by partial selection of the top candidates: the C largest kept values are
//     selected the same way and only those C are sorted, then their masses are accumulated in descending
//     order until p * Z is reached. C starts at 64 and grows 8x while the head is not enough, so a peaked
//     distribution (the usual case at T = 0.7, p = 0.9) costs O(V), and a flat one degrades to
//     O(V log V) at worst, a constant factor from a full sort.
//   Z and the sampling walk: O(V) with one exp per top-k token; the exps are kept in a buffer.
//   Rows are independent, so at::parallel_for splits the batch across threads; each thread reuses three
//   float64 buffers of length V.
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

int64_t sample_row(const float* logits, int64_t V, double T, int64_t k, double p, double u,
                   std::vector<double>& xs, std::vector<double>& w, std::vector<double>& cand) {
  if (!(T > 0.0)) {  // greedy: first maximum of the raw logits, like torch.argmax
    int64_t best = 0;
    for (int64_t i = 1; i < V; ++i) {
      if (logits[i] > logits[best]) best = i;
    }
    return best;
  }
  // Division (not multiplication by 1/T) matches torch's `logits.double() / T` bit for bit.
  xs.resize(V);
  double m = kNegInf;
  for (int64_t i = 0; i < V; ++i) {
    xs[i] = static_cast<double>(logits[i]) / T;
    m = std::max(m, xs[i]);
  }

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
    // Threshold search over the kept values: grow the sorted head until it holds p * Z.
    const double need = p * z;
    int64_t c = std::min<int64_t>(n_kept, 64);
    const double thr_k = thr;
    while (true) {
      if (c > 64) {
        // Refill in vocabulary order: after a heap select the tail holds the evicted values in rising
        // order, which would make the next heap select quadratic-ish (measured 20x slower at V=128k).
        int64_t j = 0;
        for (int64_t i = 0; i < V; ++i) {
          if (xs[i] >= thr_k) cand[j++] = xs[i];
        }
      }
      select_head(cand, n_kept, c);
      double mass = 0.0;
      bool found = false;
      for (int64_t r = 0; r < c; ++r) {
        mass += std::exp(cand[r] - m);
        // The first prefix reaching p * Z ends at value t; boundary ties (x == t) are all kept below.
        if (mass >= need) {
          thr = std::max(thr, cand[r]);
          found = true;
          break;
        }
      }
      if (found || c == n_kept) break;  // not found at c == n_kept: rounding; keep the whole top-k set
      c = std::min<int64_t>(n_kept, c * 8);
    }
  }

  // Inverse CDF in vocabulary order over the kept set.
  double total = 0.0;
  int64_t last = -1;
  for (int64_t i = 0; i < V; ++i) {
    if (w[i] > 0.0 && xs[i] >= thr) {
      total += w[i];
      last = i;
    }
  }
  const double target = u * total;
  double run = 0.0;
  for (int64_t i = 0; i <= last; ++i) {
    if (w[i] > 0.0 && xs[i] >= thr) {
      run += w[i];
      if (run > target) return i;
    }
  }
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
    std::vector<double> xs, w, cand;
    for (int64_t b = begin; b < end; ++b) {
      op[b] = sample_row(lp + b * V, V, tp[b], kp[b], pp[b], uniform01(sp[b], stp[b]), xs, w, cand);
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
