// CUDA kernel of srlm_sampling::sample (schema in sampling.cpp): one thread block per row, no sort.
//
// Same semantics as srlm_fast/sampling.py::sample_torch (the spec) and the CPU kernel; see there.
//
// Algorithm per row (V = vocabulary, P = threads per block; every pass reads the row's logits once,
// mostly from L2):
//   1. max / first argmax: one block reduction. Greedy rows (T <= 0) stop here.
//   2. top-k threshold by radix select on an order-preserving 32-bit key of the float logit: 4 passes,
//      each a 256-bin shared-memory histogram of the next 8 key bits among keys matching the prefix found
//      so far; a scan of the 256 bins from the top picks the bin holding the k-th largest key. Exact k-th
//      largest value, O(4 V / P) per thread. (Order of logit / T equals order of logit for T > 0, so the
//      key of the raw logit can be used; -0.0 is mapped to +0.0 so ties match the CPU comparisons.)
//   3. Z = sum of w = exp(x - max x) over the top-k set (float64 block reduction).
//   4. top-p threshold by the same radix descent, weighting the histogram by mass instead of count
//      (float64 shared-memory atomics): the bin scan picks the highest bin where the mass at or above it
//      reaches p * Z. After 4 passes the prefix is exactly the key t of the largest value with
//      M(t) >= p * Z: a threshold search in 4 V / P steps, no sort, no candidate buffer.
//   5. W = sum of kept w, target = u * W with u = hash(seed, step) (bit-identical splitmix64 mix), then a
//      tiled block inclusive scan in vocabulary order finds the first kept index whose running sum exceeds
//      the target; the loop stops at the tile holding it.
//   Total about 11 passes over the row, O(V / P) each per thread.
//
// Differences from the CPU path: block reductions, scans and atomics sum in another order than the CPU's
// sequential float64 loops, and CUDA's exp may differ by an ulp; tokens can therefore differ only when u
// (or M(t) against p * Z) falls within ~1e-13 relative of a boundary. The mass atomics also make such
// boundary cases non-deterministic run to run. One block per row leaves SMs idle at small B: a split-row
// variant (several blocks per row and a second reduction stage) would help batch-1 decoding.
//
// UNTESTED ON A GPU at the time of writing (written on a machine without one; compiled with nvcc only).

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <cub/block/block_reduce.cuh>
#include <cub/block/block_scan.cuh>
#include <cstdint>

namespace srlm_sampling {
namespace {

constexpr int kThreads = 512;
constexpr long long kNoToken = 0x7fffffffffffffffLL;

__device__ __forceinline__ uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

__device__ __forceinline__ double uniform01(int64_t seed, int64_t step) {
  const uint64_t key = mix64(static_cast<uint64_t>(seed) ^ 0x5851F42D4C957F2DULL);
  const uint64_t h = mix64(key + 0x9E3779B97F4A7C15ULL * static_cast<uint64_t>(step));
  return static_cast<double>(h >> 11) * (1.0 / 9007199254740992.0);
}

// Order-preserving float -> uint32 (a > b as floats <=> key(a) > key(b)); -0.0 becomes +0.0 so values
// that compare equal get equal keys.
__device__ __forceinline__ uint32_t float_key(float f) {
  if (f == 0.0f) f = 0.0f;
  const uint32_t u = __float_as_uint(f);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

struct ArgMax {
  float v;
  long long i;
};

struct ArgMaxOp {
  __device__ __forceinline__ ArgMax operator()(const ArgMax& a, const ArgMax& b) const {
    return (a.v > b.v || (a.v == b.v && a.i < b.i)) ? a : b;  // first maximum, like torch.argmax
  }
};

template <typename scalar_t>
__global__ void __launch_bounds__(kThreads)
    sample_kernel(const scalar_t* __restrict__ logits, int64_t V, const double* __restrict__ temperature,
                  const int64_t* __restrict__ top_k, const double* __restrict__ top_p,
                  const int64_t* __restrict__ seeds, const int64_t* __restrict__ steps,
                  int64_t* __restrict__ out) {
  using ReduceArg = cub::BlockReduce<ArgMax, kThreads>;
  using ReduceD = cub::BlockReduce<double, kThreads>;
  using ScanD = cub::BlockScan<double, kThreads>;
  __shared__ union {
    typename ReduceArg::TempStorage arg;
    typename ReduceD::TempStorage sum;
    typename ScanD::TempStorage scan;
  } tmp;
  __shared__ unsigned int hist_count[256];
  __shared__ double hist_mass[256];
  __shared__ ArgMax s_max;
  __shared__ double s_sum;
  __shared__ uint32_t s_prefix;
  __shared__ long long s_remaining;
  __shared__ double s_above;
  __shared__ int s_found;
  __shared__ long long s_tok;
  __shared__ long long s_last;

  const int tid = threadIdx.x;
  const int64_t row = blockIdx.x;
  const scalar_t* l = logits + row * V;
  const double T = temperature[row];

  // 1. first maximum
  ArgMax best{-INFINITY, kNoToken};
  for (int64_t i = tid; i < V; i += kThreads) {
    const float f = static_cast<float>(l[i]);
    if (best.i == kNoToken || f > best.v) best = ArgMax{f, static_cast<long long>(i)};
  }
  best = ReduceArg(tmp.arg).Reduce(best, ArgMaxOp());
  if (tid == 0) s_max = best;
  __syncthreads();
  if (!(T > 0.0)) {  // greedy (uniform branch: T is per block)
    if (tid == 0) out[row] = s_max.i;
    return;
  }
  const double m = static_cast<double>(s_max.v) / T;

  // 2. top-k threshold key by radix select (k-th largest key).
  const int64_t k = top_k[row];
  uint32_t thr = 0;  // key >= 0: everything kept
  if (k > 0 && k < V) {
    uint32_t prefix = 0, mask = 0;
    long long remaining = k;
    for (int shift = 24; shift >= 0; shift -= 8) {
      for (int b = tid; b < 256; b += kThreads) hist_count[b] = 0;
      __syncthreads();
      for (int64_t i = tid; i < V; i += kThreads) {
        const uint32_t key = float_key(static_cast<float>(l[i]));
        if ((key & mask) == prefix) atomicAdd(&hist_count[(key >> shift) & 0xFFu], 1u);
      }
      __syncthreads();
      if (tid == 0) {
        long long cum = 0;
        int chosen = 0;
        for (int b = 255; b >= 0; --b) {
          if (cum + hist_count[b] >= remaining) {
            chosen = b;
            break;
          }
          cum += hist_count[b];
        }
        s_prefix = prefix | (static_cast<uint32_t>(chosen) << shift);
        s_remaining = remaining - cum;
      }
      __syncthreads();
      prefix = s_prefix;
      remaining = s_remaining;
      mask |= 0xFFu << shift;
      __syncthreads();
    }
    thr = prefix;
  }

  // 3. Z over the top-k set.
  double part = 0.0;
  for (int64_t i = tid; i < V; i += kThreads) {
    const float f = static_cast<float>(l[i]);
    if (float_key(f) >= thr) part += exp(static_cast<double>(f) / T - m);
  }
  double total = ReduceD(tmp.sum).Sum(part);
  if (tid == 0) s_sum = total;
  __syncthreads();
  total = s_sum;

  // 4. top-p threshold key by radix descent on mass.
  const double p = top_p[row];
  if (p < 1.0) {
    const double need = p * total;
    const uint32_t thr_k = thr;
    uint32_t prefix = 0, mask = 0;
    double above = 0.0;
    bool found = true;
    for (int shift = 24; shift >= 0; shift -= 8) {
      for (int b = tid; b < 256; b += kThreads) hist_mass[b] = 0.0;
      __syncthreads();
      for (int64_t i = tid; i < V; i += kThreads) {
        const float f = static_cast<float>(l[i]);
        const uint32_t key = float_key(f);
        if (key >= thr_k && (key & mask) == prefix) {
          atomicAdd(&hist_mass[(key >> shift) & 0xFFu], exp(static_cast<double>(f) / T - m));
        }
      }
      __syncthreads();
      if (tid == 0) {
        double cum = above;
        int chosen = -1;
        for (int b = 255; b >= 0; --b) {
          const double h = hist_mass[b];
          if (h > 0.0 && cum + h >= need) {  // h > 0: the threshold is a token with mass
            chosen = b;
            break;
          }
          cum += h;
        }
        s_found = chosen >= 0;
        s_prefix = prefix | (static_cast<uint32_t>(chosen < 0 ? 0 : chosen) << shift);
        s_above = cum;
      }
      __syncthreads();
      found = s_found != 0;
      prefix = s_prefix;
      above = s_above;
      mask |= 0xFFu << shift;
      __syncthreads();
      if (!found) break;  // rounding kept the mass below p * Z: keep the whole top-k set
    }
    if (found) {
      thr = prefix > thr ? prefix : thr;
      part = 0.0;
      for (int64_t i = tid; i < V; i += kThreads) {
        const float f = static_cast<float>(l[i]);
        if (float_key(f) >= thr) part += exp(static_cast<double>(f) / T - m);
      }
      total = ReduceD(tmp.sum).Sum(part);
      if (tid == 0) s_sum = total;
      __syncthreads();
      total = s_sum;
    }
  }

  // 5. inverse CDF in vocabulary order, one tile of kThreads tokens at a time.
  const double target = uniform01(seeds[row], steps[row]) * total;
  if (tid == 0) {
    s_tok = kNoToken;
    s_last = -1;
  }
  __syncthreads();
  double run = 0.0;
  for (int64_t base = 0; base < V; base += kThreads) {
    const int64_t i = base + tid;
    double w = 0.0;
    if (i < V) {
      const float f = static_cast<float>(l[i]);
      if (float_key(f) >= thr) w = exp(static_cast<double>(f) / T - m);
    }
    double incl, tile;
    ScanD(tmp.scan).InclusiveSum(w, incl, tile);
    if (w > 0.0) {
      if (run + incl > target) atomicMin(&s_tok, static_cast<long long>(i));
      atomicMax(&s_last, static_cast<long long>(i));
    }
    run += tile;
    __syncthreads();
    const bool done = s_tok != kNoToken;
    __syncthreads();  // everyone has read s_tok before the next tile may write it (and reuses tmp.scan)
    if (done) break;
  }
  if (tid == 0) out[row] = s_tok != kNoToken ? s_tok : s_last;  // u * W rounded up to W: last kept
}

at::Tensor sample_cuda(const at::Tensor& logits, const at::Tensor& temperature, const at::Tensor& top_k,
                       const at::Tensor& top_p, const at::Tensor& seeds, const at::Tensor& steps) {
  TORCH_CHECK(logits.dim() == 2, "srlm_sampling.sample: logits must be (B, V), got ", logits.sizes());
  const int64_t B = logits.size(0);
  const int64_t V = logits.size(1);
  TORCH_CHECK(V > 0, "srlm_sampling.sample: empty vocabulary");
  auto check = [&](const at::Tensor& t, at::ScalarType dt, const char* name) {
    TORCH_CHECK(t.dim() == 1 && t.size(0) == B && t.scalar_type() == dt && t.is_contiguous() &&
                    t.device() == logits.device(),
                "srlm_sampling.sample: ", name, " must be a contiguous (B,) ", dt, " tensor on ",
                logits.device());
  };
  check(temperature, at::kDouble, "temperature");
  check(top_k, at::kLong, "top_k");
  check(top_p, at::kDouble, "top_p");
  check(seeds, at::kLong, "seeds");
  check(steps, at::kLong, "steps");

  const c10::cuda::CUDAGuard guard(logits.device());
  const at::Tensor lg = logits.contiguous();
  at::Tensor out = at::empty({B}, logits.options().dtype(at::kLong));
  if (B == 0) return out;
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, lg.scalar_type(), "srlm_sampling_cuda", [&] {
    sample_kernel<scalar_t><<<static_cast<unsigned int>(B), kThreads, 0, stream>>>(
        lg.data_ptr<scalar_t>(), V, temperature.data_ptr<double>(), top_k.data_ptr<int64_t>(),
        top_p.data_ptr<double>(), seeds.data_ptr<int64_t>(), steps.data_ptr<int64_t>(),
        out.data_ptr<int64_t>());
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(srlm_sampling, CUDA, m) { m.impl("sample", &sample_cuda); }

}  // namespace srlm_sampling
