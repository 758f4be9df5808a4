// Token sampling without sorting the vocabulary (cuda_sampling.h). ref_sample walks the logits in descending order
// (ties: ascending id) and stops at the first position whose cumulative count or probability passes a target:
// K - 1 tokens (top_k), top_p of the top-k mass (top_p), u01 of the kept mass (the draw). Each of those is a
// radix select here: 4 passes over the row, each a 256-bin histogram (count and fixed-point mass) of the keys
// that match the digits chosen so far, and a walk down the bins to the one the target falls in. The boundary key
// then holds several tokens only if logits tie; they all weigh the same, so how many of them the target covers is
// a division, and the j-th of them in id order is found with a block-wide count.
//
// Masses are sums of weights exp((l - max) / T) in 2^-40 fixed point: integer atomics give the same sum in any
// order, so a row always samples the same token, and a prefix's mass is exact arithmetic (count * weight) at a tie.
#include <cmath>

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/cuda_sampling.h"

namespace dsi::cuda {
namespace {

using u64 = unsigned long long;  // the type the 64-bit atomics take

constexpr int kBins = 256;
constexpr int kMaxThreads = 1024;
constexpr float kOne = 1099511627776.0f;  // 2^40: weight 1 in fixed point
constexpr u64 kOneFixed = u64{1} << 40;

// Order-preserving key: a larger logit has a larger key; -0 and +0 are one key; NaN ranks as -inf.
__device__ __forceinline__ uint32_t logit_key(float f) {
  uint32_t u = __float_as_uint(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) u = 0xff800000u;  // NaN -> -inf
  if ((u & 0x7fffffffu) == 0) u = 0;                      // -0 -> +0
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}
__device__ __forceinline__ float key_logit(uint32_t k) {
  return __uint_as_float((k & 0x80000000u) ? (k & 0x7fffffffu) : ~k);
}

// Fixed-point weight of a logit: a function of the key alone, so all tokens of one key weigh exactly the same.
struct Weigher {
  float max_logit, temperature;
  __device__ __forceinline__ u64 operator()(uint32_t key) const {
    const float l = key_logit(key);
    if (l == max_logit) return kOneFixed;  // also when the max is +inf
    return __float2ull_rn(expf((l - max_logit) / temperature) * kOne);
  }
};

struct Hist {
  uint32_t count[kBins];
  uint32_t min_id[kBins];  // filled by the last digit's pass only
  u64 mass[kBins];
};

// A radix select in progress: the key bits chosen so far and the count and mass of the keys ranked above them.
// After the last digit, key is the boundary key and tie_* describe its tokens.
struct Cursor {
  uint32_t key;
  uint32_t count_above;
  u64 mass_above;
  uint32_t tie_count, tie_min_id;
};

struct Shared {
  Hist h0;  // first digit of the whole row: every select starts from it
  Hist h;   // later digits
  Cursor cur;
  u64 red64[kMaxThreads / 32];
  uint32_t red32[kMaxThreads / 32];
  uint32_t tie_warp, tie_rank, tie_id;
};

// Histogram updates go through a small per-thread cache of bins: logits crowd into a few exponent bins, and 32
// lanes adding to one shared address serialize, while a thread's run of hits costs no atomic at all.
template <bool kMinId>
struct BinCache {
  static constexpr int kSlots = 4;
  uint32_t bin[kSlots], count[kSlots], first_id[kSlots];
  u64 mass[kSlots];

  __device__ __forceinline__ BinCache() {
#pragma unroll
    for (int s = 0; s < kSlots; ++s) bin[s] = kBins, count[s] = 0, first_id[s] = 0, mass[s] = 0;
  }
  __device__ __forceinline__ void flush(int s, Hist& h) {
    if (count[s] == 0) return;
    atomicAdd(&h.count[bin[s]], count[s]);
    atomicAdd(&h.mass[bin[s]], mass[s]);
    if constexpr (kMinId) atomicMin(&h.min_id[bin[s]], first_id[s]);
  }
  // Ids arrive in increasing order per thread, so a slot's first id is its smallest.
  __device__ __forceinline__ void add(uint32_t b, u64 w, uint32_t id, Hist& h) {
#pragma unroll
    for (int s = 0; s < kSlots; ++s) {
      if (bin[s] == b) {
        ++count[s];
        mass[s] += w;
        return;
      }
    }
    flush(kSlots - 1, h);
#pragma unroll
    for (int s = kSlots - 1; s > 0; --s) {
      bin[s] = bin[s - 1], count[s] = count[s - 1], first_id[s] = first_id[s - 1], mass[s] = mass[s - 1];
    }
    bin[0] = b, count[0] = 1, first_id[0] = id, mass[0] = w;
  }
  __device__ __forceinline__ void flush_all(Hist& h) {
#pragma unroll
    for (int s = 0; s < kSlots; ++s) flush(s, h);
  }
};

__device__ __forceinline__ void clear(Hist& h) {
  for (int b = threadIdx.x; b < kBins; b += blockDim.x) h.count[b] = 0, h.min_id[b] = 0xffffffffu, h.mass[b] = 0;
}

__device__ __forceinline__ u64 block_sum(u64 v, Shared& s) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, warps = blockDim.x >> 5;
  __syncthreads();  // red64 may still be read from an earlier reduction
  if (lane == 0) s.red64[warp] = v;
  __syncthreads();
  v = lane < warps ? s.red64[lane] : 0;
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

__device__ __forceinline__ u64 block_max(u64 v, Shared& s) {
  for (int o = 16; o > 0; o >>= 1) v = max(v, __shfl_xor_sync(0xffffffffu, v, o));
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, warps = blockDim.x >> 5;
  __syncthreads();
  if (lane == 0) s.red64[warp] = v;
  __syncthreads();
  v = lane < warps ? s.red64[lane] : 0;
  for (int o = 16; o > 0; o >>= 1) v = max(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// Warp 0: picks the bin (at bits [shift, shift + 8) of the key) that holds the first position whose cumulative
// count (or mass) exceeds target, walking from the top bin down, and moves s.cur onto it. The caller guarantees
// that the target lies inside the cursor's range, so exactly one bin holds it.
__device__ void walk(const Hist& h, int shift, bool by_mass, u64 target, Shared& s) {
  const int lane = threadIdx.x & 31;
  const Cursor c = s.cur;
  uint32_t cnt = 0;
  u64 mass = 0;
  for (int i = 0; i < 8; ++i) {  // lane l: bins 255 - 8 l down to 248 - 8 l
    const int b = kBins - 1 - 8 * lane - i;
    cnt += h.count[b];
    mass += h.mass[b];
  }
  uint32_t cnt_incl = cnt;
  u64 mass_incl = mass;
  for (int o = 1; o < 32; o <<= 1) {
    const uint32_t tc = __shfl_up_sync(0xffffffffu, cnt_incl, o);
    const u64 tm = __shfl_up_sync(0xffffffffu, mass_incl, o);
    if (lane >= o) cnt_incl += tc, mass_incl += tm;
  }
  const u64 above = by_mass ? c.mass_above + mass_incl : c.count_above + cnt_incl;
  const unsigned holds = __ballot_sync(0xffffffffu, target < above);
  const int owner = holds != 0 ? __ffs(holds) - 1 : 31;  // 31: cannot happen (see above), stay in range
  __syncwarp();
  if (lane != owner) return;
  uint32_t run_cnt = cnt_incl - cnt;
  u64 run_mass = mass_incl - mass;
  for (int i = 0; i < 8; ++i) {
    const int b = kBins - 1 - 8 * lane - i;
    const uint32_t next_cnt = run_cnt + h.count[b];
    const u64 next_mass = run_mass + h.mass[b];
    const u64 reach = by_mass ? c.mass_above + next_mass : c.count_above + next_cnt;
    if (target < reach || i == 7) {
      s.cur = {c.key | (static_cast<uint32_t>(b) << shift), c.count_above + run_cnt, c.mass_above + run_mass,
               h.count[b], h.min_id[b]};
      return;
    }
    run_cnt = next_cnt;
    run_mass = next_mass;
  }
}

// Histogram of the keys that match cur.key above bit shift + 8, binned by the 8 bits at shift.
template <bool kMinId>
__device__ void histogram(const float* row, int64_t vocab, uint32_t prefix, int shift, const Weigher& weigh, Hist& h) {
  BinCache<kMinId> cache;
  const uint32_t high = prefix >> (shift + 8);
  for (int64_t i = threadIdx.x; i < vocab; i += blockDim.x) {
    const uint32_t k = logit_key(row[i]);
    if ((k >> (shift + 8)) != high) continue;
    cache.add((k >> shift) & (kBins - 1), weigh(k), static_cast<uint32_t>(i), h);
  }
  cache.flush_all(h);
}

// The first position (in descending key order, ties by id) whose cumulative count or mass exceeds target.
// Returns the boundary key with the count and mass of the keys above it and its own tokens' count.
__device__ Cursor select(const float* row, int64_t vocab, const Weigher& weigh, bool by_mass, u64 target,
                         Shared& s) {
  if (threadIdx.x == 0) s.cur = {0, 0, 0, 0, 0};
  __syncthreads();
  if (threadIdx.x < 32) walk(s.h0, 24, by_mass, target, s);
  for (int shift = 16; shift >= 0; shift -= 8) {
    __syncthreads();  // the walk is done with s.h
    clear(s.h);
    __syncthreads();  // the cursor and a clean histogram
    const uint32_t prefix = s.cur.key;
    if (shift > 0) {
      histogram<false>(row, vocab, prefix, shift, weigh, s.h);
    } else {
      histogram<true>(row, vocab, prefix, shift, weigh, s.h);
    }
    __syncthreads();
    if (threadIdx.x < 32) walk(s.h, shift, by_mass, target, s);
  }
  __syncthreads();
  const Cursor c = s.cur;
  __syncthreads();  // every thread has read s.cur before anyone starts the next select
  return c;
}

// Id of the rank-th token (0-based, in id order) whose key is `key`: per-warp counts over contiguous chunks,
// then the owning warp walks its chunk again.
__device__ uint32_t nth_tie(const float* row, int64_t vocab, uint32_t key, uint32_t rank, Shared& s) {
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, warps = blockDim.x >> 5;
  const int64_t chunk = ((vocab + warps - 1) / warps + 31) / 32 * 32;
  const int64_t begin = warp * chunk, end = min(vocab, begin + chunk);
  uint32_t n = 0;
  for (int64_t base = begin; base < end; base += 32) {
    const int64_t i = base + lane;
    n += __popc(__ballot_sync(0xffffffffu, i < end && logit_key(row[i]) == key));
  }
  if (lane == 0) s.red32[warp] = n;
  __syncthreads();
  if (warp == 0) {
    const uint32_t mine = lane < warps ? s.red32[lane] : 0;
    uint32_t incl = mine;
    for (int o = 1; o < 32; o <<= 1) {
      const uint32_t t = __shfl_up_sync(0xffffffffu, incl, o);
      if (lane >= o) incl += t;
    }
    const unsigned holds = __ballot_sync(0xffffffffu, rank < incl);
    const int owner = holds != 0 ? __ffs(holds) - 1 : 0;
    if (lane == owner) {
      s.tie_warp = static_cast<uint32_t>(owner);
      s.tie_rank = rank - (incl - mine);
      s.tie_id = 0;
    }
  }
  __syncthreads();
  if (warp == static_cast<int>(s.tie_warp)) {
    uint32_t left = s.tie_rank;
    for (int64_t base = begin; base < end; base += 32) {
      const int64_t i = base + lane;
      const unsigned m = __ballot_sync(0xffffffffu, i < end && logit_key(row[i]) == key);
      const uint32_t c = __popc(m);
      if (left < c) {
        if (lane == 0) s.tie_id = static_cast<uint32_t>(base) + __fns(m, 0, static_cast<int>(left) + 1);
        break;
      }
      left -= c;
    }
  }
  __syncthreads();
  return s.tie_id;
}

__global__ void __launch_bounds__(kMaxThreads) sample_rows_kernel(SampleRowsArgs a) {
  __shared__ Shared s;
  const int64_t vocab = a.vocab;
  const float* row = a.logits + blockIdx.x * a.row_stride;
  const DeviceSampleParams p = a.params[blockIdx.x];

  // The max key, lowest id on ties: (key, ~id) packed so that one max finds both.
  u64 best = 0;
  for (int64_t i = threadIdx.x; i < vocab; i += blockDim.x) {
    best = max(best, (u64{logit_key(row[i])} << 32) | (0xffffffffu - static_cast<uint32_t>(i)));
  }
  best = block_max(best, s);
  const auto max_key = static_cast<uint32_t>(best >> 32);
  const uint32_t argmax = 0xffffffffu - static_cast<uint32_t>(best);
  // !(T > 0) also catches a NaN temperature.
  if (p.greedy != 0 || !(p.temperature > 0.0f) || p.top_k == 1) {
    if (threadIdx.x == 0) a.out_ids[blockIdx.x] = static_cast<int32_t>(argmax);
    return;
  }
  const Weigher weigh{key_logit(max_key), p.temperature};

  // min_p keeps probabilities >= min_p * the top one, i.e. exp((l - max) / T) >= min_p: l >= max + T ln(min_p),
  // a threshold on the key (the smallest float at or above it).
  const bool use_min_p = p.min_p > 0.0f;
  uint32_t min_p_key = 0;
  if (use_min_p) {
    const double floor_logit = double{weigh.max_logit} + double{p.temperature} * log(double{p.min_p});
    min_p_key = logit_key(__double2float_ru(floor_logit));
  }

  // First digit of the whole row, and the count and mass of the min_p set.
  clear(s.h0);
  __syncthreads();
  u64 min_p_count = 0, min_p_mass = 0;
  {
    BinCache<false> cache;
    for (int64_t i = threadIdx.x; i < vocab; i += blockDim.x) {
      const uint32_t k = logit_key(row[i]);
      const u64 w = weigh(k);
      cache.add(k >> 24, w, static_cast<uint32_t>(i), s.h0);
      if (use_min_p && k >= min_p_key) ++min_p_count, min_p_mass += w;
    }
    cache.flush_all(s.h0);
  }
  if (use_min_p) {
    min_p_count = block_sum(min_p_count, s);
    min_p_mass = block_sum(min_p_mass, s);
  }
  __syncthreads();
  u64 total = 0;
  for (int b = 0; b < kBins; ++b) total += s.h0.mass[b];

  // top_k: the first k positions and their mass.
  const int64_t k = p.top_k > 0 && p.top_k < vocab ? p.top_k : vocab;
  u64 kept = k;
  u64 kept_mass = total;
  if (k < vocab) {
    const Cursor c = select(row, vocab, weigh, false, static_cast<u64>(k - 1), s);
    kept_mass = c.mass_above + (static_cast<u64>(k) - c.count_above) * weigh(c.key);
  }
  const u64 top_k_mass = kept_mass;
  // min_p: the threshold set is a prefix of the order (at least the top token).
  if (use_min_p && min_p_count < kept) {
    kept = min_p_count > 0 ? min_p_count : 1;
    kept_mass = min_p_count > 0 ? min_p_mass : kOneFixed;
  }
  // top_p: the first position whose cumulative mass reaches top_p of the top-k mass, if inside the kept prefix.
  if (p.top_p < 1.0f) {
    const double reach = ceil(double{p.top_p} * static_cast<double>(top_k_mass));
    u64 target = reach > 1.0 ? static_cast<u64>(reach) - 1 : 0;
    target = min(target, top_k_mass - 1);
    const Cursor c = select(row, vocab, weigh, true, target, s);
    const u64 w = weigh(c.key);
    const u64 ties = (target - c.mass_above) / w + 1;  // tokens of the boundary key up to the target
    if (c.count_above + ties < kept) {
      kept = c.count_above + ties;
      kept_mass = c.mass_above + ties * w;
    }
  }
  // The draw: the first position whose cumulative mass exceeds u01 * kept mass (always inside the kept prefix).
  double u = p.u01;
  if (!(u >= 0.0)) u = 0.0;
  const u64 target = min(static_cast<u64>(floor(min(u, 1.0) * static_cast<double>(kept_mass))), kept_mass - 1);
  const Cursor c = select(row, vocab, weigh, true, target, s);
  const auto rank = static_cast<uint32_t>((target - c.mass_above) / weigh(c.key));
  const uint32_t id = rank == 0 ? c.tie_min_id : nth_tie(row, vocab, c.key, rank, s);
  if (threadIdx.x == 0) a.out_ids[blockIdx.x] = static_cast<int32_t>(id);
}

}  // namespace

Status sample_rows(CudaContext& ctx, const SampleRowsArgs& a) {
  // vocab < 2^23: a row's mass (vocab * 2^40 at most) fits in 64 bits.
  if (a.rows < 0 || a.vocab <= 0 || a.vocab >= (int64_t{1} << 23) || a.row_stride < a.vocab) {
    return Status::InvalidArgument(str_cat("sample_rows: ", a.rows, " rows of vocab ", a.vocab, " with row stride ",
                                           a.row_stride, " (need vocab in [1, 2^23) and stride >= vocab)"));
  }
  if (a.rows == 0) return Status::Ok();
  if (a.logits == nullptr || a.params == nullptr || a.out_ids == nullptr) {
    return Status::InvalidArgument("sample_rows: null logits, params or out_ids");
  }
  if (a.rows > 0x7fffffff) return Status::InvalidArgument(str_cat("sample_rows: ", a.rows, " rows"));
  // Small rows need few threads; large ones want the whole block for one row's passes.
  const int threads = a.vocab >= 16384 ? kMaxThreads : 256;
  sample_rows_kernel<<<static_cast<unsigned>(a.rows), threads, 0, ctx.stream()>>>(a);
  DSI_CUDA_RETURN_IF_LAUNCH_FAILED();
  return Status::Ok();
}

}  // namespace dsi::cuda
