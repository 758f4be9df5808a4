// sample_rows against ref_sample on fresh random logits (continuous, tied at multiples of 0.25, all equal) and a
// grid of parameters (greedy; T 0.3 / 1 / 1.7; top_k 0 / 1 / 5 / 50 / vocab + 3; top_p 1 / 0.9 / 0.5 / 0.0001;
// min_p 0 / 0.05 / 0.5; u01 0, 0.999999 and random). The token must be the reference's; a different one is
// tolerated only where the reference itself was within 1e-5 of another choice (a cumulative probability near r
// or near top_p, a probability near the min_p floor), which f32 weights against doubles can flip: such rows are
// counted. Also: a chi-square check of 20000 draws against the softmax, bad arguments, and a timing line.
#include <cuda_runtime.h>

#include <algorithm>
#include <functional>
#include <numeric>

#include "cuda_test_util.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/cuda_sampling.h"
#include "kernels/ref/ref_sampling.h"

namespace dsi::cuda_test {
namespace {

struct RowCase {
  SampleParams params;
  double u01 = 0.0;
};

cuda::DeviceSampleParams device_params(const RowCase& c) {
  return {.temperature = c.params.temperature, .top_p = c.params.top_p, .min_p = c.params.min_p,
          .greedy = is_greedy(c.params) ? 1 : 0, .top_k = c.params.top_k, .u01 = c.u01};
}

// Whether `got` is a token ref_sample could have returned had one of its double comparisons gone the other way:
// the kept prefix one token shorter or longer where a cumulative probability lies within 1e-5 of top_p (or a
// probability within 1e-5 of the min_p floor), and then the draw one token off where r lies within 1e-5 of a
// cumulative probability.
bool near_boundary(const float* logits, int64_t vocab, const SampleParams& p, double u01, int64_t got) {
  constexpr double kTol = 1e-5;
  std::vector<int64_t> ids(static_cast<size_t>(vocab));
  std::iota(ids.begin(), ids.end(), 0);
  std::stable_sort(ids.begin(), ids.end(), [&](int64_t x, int64_t y) { return logits[x] > logits[y]; });
  const size_t k = p.top_k > 0 ? std::min<size_t>(ids.size(), static_cast<size_t>(p.top_k)) : ids.size();
  std::vector<double> probs(k), cum(k);
  double total = 0;
  for (size_t i = 0; i < k; ++i) {
    total += probs[i] = std::exp((logits[ids[i]] - double{logits[ids[0]]}) / p.temperature);
  }
  for (size_t i = 0; i < k; ++i) cum[i] = (probs[i] /= total) + (i ? cum[i - 1] : 0.0);
  const double floor = p.min_p * probs[0];
  size_t keep = k;
  if (p.min_p > 0.0f) {
    keep = 1;
    while (keep < k && probs[keep] >= floor) ++keep;
  }
  if (p.top_p < 1.0f) {
    size_t n = 0;
    while (n < keep && cum[n] < p.top_p) ++n;
    keep = std::min(keep, n + 1);
  }
  const auto near_cut = [&](size_t j) {  // the comparisons that decide whether position j is kept
    return j < k && ((p.top_p < 1.0f && std::fabs(cum[j] - p.top_p) <= kTol) ||
                     (p.min_p > 0.0f && std::fabs(probs[j] - floor) <= kTol * floor));
  };
  const auto pos = static_cast<size_t>(std::find(ids.begin(), ids.end(), got) - ids.begin());
  for (size_t alt : {keep - 1, keep, keep + 1}) {
    if (alt < 1 || alt > k) continue;
    if (alt != keep && !near_cut(keep - 1) && !near_cut(keep) && !(keep >= 2 && near_cut(keep - 2))) continue;
    const double mass = cum[alt - 1], r = u01 * mass;
    size_t i = 0;
    while (i + 1 < alt && !(r < cum[i])) ++i;
    if (pos == i) return true;
    if (pos + 1 == i && std::fabs(cum[pos] - r) <= kTol * mass) return true;  // r at the top of got's span
    if (pos == i + 1 && pos < alt && std::fabs(cum[i] - r) <= kTol * mass) return true;
  }
  return false;
}
enum class Logits { kContinuous, kTied, kEqual };
const char* logits_name(Logits kind) {
  return kind == Logits::kContinuous ? "continuous" : kind == Logits::kTied ? "tied-0.25" : "all-equal";
}

std::vector<float> make_logits(Logits kind, int64_t rows, int64_t vocab, int64_t stride) {
  std::normal_distribution<float> normal(0.0f, 3.0f);
  std::vector<float> v(static_cast<size_t>(rows * stride), -1e30f);  // padding: must never be read
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t i = 0; i < vocab; ++i) {
      const float x = normal(rng());
      v[r * stride + i] = kind == Logits::kContinuous ? x : kind == Logits::kTied ? std::round(x * 4.0f) / 4.0f : 1.5f;
    }
  }
  return v;
}

// The parameter grid, one entry per combination (greedy first), cycled through by the rows of a case.
std::vector<SampleParams> param_grid(int64_t vocab) {
  std::vector<SampleParams> grid = {{.temperature = 0.0f}};
  for (float t : {0.3f, 1.0f, 1.7f}) {
    for (int64_t k : {int64_t{0}, int64_t{1}, int64_t{5}, int64_t{50}, vocab + 3}) {
      for (float top_p : {1.0f, 0.9f, 0.5f, 0.0001f}) {
        for (float min_p : {0.0f, 0.05f, 0.5f}) {
          grid.push_back({.temperature = t, .top_p = top_p, .min_p = min_p, .top_k = k});
        }
      }
    }
  }
  return grid;
}

double pick_u01(int64_t i) {
  std::uniform_real_distribution<double> u(0.0, 1.0);
  const int64_t m = i % 4;
  return m == 0 ? 0.0 : m == 1 ? 0.999999 : u(rng());
}

struct Counts {
  int64_t rows = 0, exact = 0, near = 0, bad = 0;
};

// rows rows of one kind of logits; row i takes grid[(first + i * step) % size] and pick_u01(first + i).
void run_case(CudaContext& ctx, int64_t vocab, int64_t rows, Logits kind, const std::vector<SampleParams>& grid,
              int64_t first, int64_t step, Counts& counts) {
  const std::string name = str_cat("sample_rows vocab=", vocab, " rows=", rows, " ", logits_name(kind));
  const int64_t stride = vocab + (rows % 2 == 1 ? 5 : 0);
  const std::vector<float> logits = make_logits(kind, rows, vocab, stride);
  std::vector<RowCase> cases;
  std::vector<cuda::DeviceSampleParams> params;
  for (int64_t i = 0; i < rows; ++i) {
    const auto g = static_cast<size_t>((first + i * step) % static_cast<int64_t>(grid.size()));
    cases.push_back({grid[g], pick_u01(first + i)});
    params.push_back(device_params(cases.back()));
  }
  auto dl = upload(ctx, logits);
  auto dp = upload(ctx, params);
  auto dout = upload(ctx, std::vector<int32_t>(static_cast<size_t>(rows), -1));
  const cuda::SampleRowsArgs args{.logits = dl.get(), .rows = rows, .vocab = vocab, .row_stride = stride,
                                  .params = dp.get(), .out_ids = dout.get()};
  CT_TRY(name, cuda::sample_rows(ctx, args));
  const std::vector<int32_t> got = download(ctx, dout, static_cast<size_t>(rows));
  CT_TRY(name, cuda::sample_rows(ctx, args));  // same inputs, same tokens (integer sums: order-independent)
  const std::vector<int32_t> again = download(ctx, dout, static_cast<size_t>(rows));
  int64_t near = 0, bad = 0;
  for (int64_t i = 0; i < rows; ++i) {
    const float* row = logits.data() + i * stride;
    const RowCase& c = cases[i];
    const int64_t want = ref_sample(row, vocab, c.params, c.u01);
    if (got[i] == want && again[i] == got[i]) continue;
    const bool tolerated = again[i] == got[i] && !is_greedy(c.params) && got[i] >= 0 && got[i] < vocab &&
                           near_boundary(row, vocab, c.params, c.u01, got[i]);
    (tolerated ? near : bad)++;
    if (!tolerated && bad <= 5) {
      std::printf("  row %ld: got %d (again %d) want %ld; T=%g top_k=%ld top_p=%g min_p=%g u01=%.9g\n",
                  static_cast<long>(i), got[i], again[i], static_cast<long>(want), c.params.temperature,
                  static_cast<long>(c.params.top_k), c.params.top_p, c.params.min_p, c.u01);
    }
  }
  counts.rows += rows;
  counts.exact += rows - near - bad;
  counts.near += near;
  counts.bad += bad;
  std::printf("%s %s: %ld rows, %ld near-boundary, %ld wrong\n", bad == 0 ? "PASS" : "FAIL", name.c_str(),
              static_cast<long>(rows), static_cast<long>(near), static_cast<long>(bad));
  (bad == 0 ? tally().passed : tally().failed)++;
}

// 20000 rows of one small distribution with random u01: the token histogram against the kept softmax.
void test_distribution(CudaContext& ctx, const SampleParams& p) {
  const std::string name = str_cat("sample_rows distribution T=", p.temperature, " top_k=", p.top_k,
                                   " top_p=", p.top_p, " min_p=", p.min_p);
  constexpr int64_t kRows = 20000, kVocab = 12;
  const std::vector<float> one = {1.0f, 0.5f, 2.0f, -1.0f, 0.5f, 1.5f, -3.0f, 0.0f, 2.0f, 0.25f, -0.5f, 1.0f};
  std::vector<float> logits;
  std::vector<cuda::DeviceSampleParams> params;
  std::uniform_real_distribution<double> u(0.0, 1.0);
  for (int64_t r = 0; r < kRows; ++r) {
    logits.insert(logits.end(), one.begin(), one.end());
    params.push_back(device_params({p, u(rng())}));
  }
  // Expected frequencies: the reference over a fine sweep of u01 (its kept set, renormalized).
  std::vector<double> expect(kVocab, 0.0);
  constexpr int kSweep = 200000;
  for (int i = 0; i < kSweep; ++i) expect[ref_sample(one.data(), kVocab, p, (i + 0.5) / kSweep)] += 1.0 / kSweep;
  auto dl = upload(ctx, logits);
  auto dp = upload(ctx, params);
  auto dout = upload(ctx, std::vector<int32_t>(kRows, -1));
  CT_TRY(name, cuda::sample_rows(ctx, {.logits = dl.get(), .rows = kRows, .vocab = kVocab, .row_stride = kVocab,
                                       .params = dp.get(), .out_ids = dout.get()}));
  const std::vector<int32_t> got = download(ctx, dout, kRows);
  std::vector<double> seen(kVocab, 0.0);
  for (int32_t id : got) {
    CT_CHECK(name, id >= 0 && id < kVocab);
    seen[id] += 1.0;
  }
  double chi2 = 0.0;
  int dof = -1;
  for (int64_t i = 0; i < kVocab; ++i) {
    const double e = expect[i] * kRows;
    if (e == 0.0) {
      CT_CHECK(name, seen[i] == 0.0);  // outside the kept set: never drawn
      continue;
    }
    chi2 += (seen[i] - e) * (seen[i] - e) / e;
    ++dof;
  }
  // The 1e-6 tail of chi-square with dof <= 11 lies below 50.
  const bool ok = chi2 < 50.0;
  std::printf("%s %s chi2=%.2f dof=%d bound=50\n", ok ? "PASS" : "FAIL", name.c_str(), chi2, dof);
  (ok ? tally().passed : tally().failed)++;
}

void test_bad_args(CudaContext& ctx) {
  const std::string name = "sample_rows bad arguments";
  auto dl = upload(ctx, std::vector<float>(8, 0.0f));
  auto dp = upload(ctx, std::vector<cuda::DeviceSampleParams>(1));
  auto dout = upload(ctx, std::vector<int32_t>(1, 0));
  const cuda::SampleRowsArgs ok{.logits = dl.get(), .rows = 1, .vocab = 8, .row_stride = 8, .params = dp.get(),
                                .out_ids = dout.get()};
  CT_TRY(name, cuda::sample_rows(ctx, ok));
  auto code = [&](cuda::SampleRowsArgs a) { return cuda::sample_rows(ctx, a).code(); };
  cuda::SampleRowsArgs a = ok;
  a.vocab = 0;
  CT_CHECK(name, code(a) == StatusCode::kInvalidArgument);
  a = ok;
  a.row_stride = 7;
  CT_CHECK(name, code(a) == StatusCode::kInvalidArgument);
  a = ok;
  a.params = nullptr;
  CT_CHECK(name, code(a) == StatusCode::kInvalidArgument);
  a = ok;
  a.rows = 0;
  a.logits = nullptr;
  CT_CHECK(name, code(a) == StatusCode::kOk);  // nothing to do
  std::printf("PASS %s\n", name.c_str());
  tally().passed++;
}

Status time_us(CudaContext& ctx, const std::function<Status()>& fn, double* us) {
  constexpr int kWarmup = 3, kIters = 20;
  for (int i = 0; i < kWarmup; ++i) DSI_RETURN_IF_ERROR(fn());
  cudaEvent_t start = nullptr, stop = nullptr;
  DSI_CUDA_RETURN_IF_ERROR(cudaEventCreate(&start));
  DSI_CUDA_RETURN_IF_ERROR(cudaEventCreate(&stop));
  Status st = Status::Ok();
  if (cudaEventRecord(start, ctx.stream()) != cudaSuccess) st = Status::Internal("cudaEventRecord");
  for (int i = 0; i < kIters && st.ok(); ++i) st = fn();
  float ms = 0.0f;
  if (st.ok() && (cudaEventRecord(stop, ctx.stream()) != cudaSuccess || cudaEventSynchronize(stop) != cudaSuccess ||
                  cudaEventElapsedTime(&ms, start, stop) != cudaSuccess)) {
    st = Status::Internal("timing events failed");
  }
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  *us = 1e3 * ms / kIters;
  return st;
}

// Info only: time per call at the DeepSeek-V3 vocabulary, greedy and T=0.7 top_p=0.9 (u01 random).
void time_sampling(CudaContext& ctx) {
  constexpr int64_t kVocab = 129280;
  const std::string name = str_cat("sample_rows timing vocab=", kVocab);
  for (int64_t rows : {1, 8, 64, 128}) {
    auto dl = upload(ctx, make_logits(Logits::kContinuous, rows, kVocab, kVocab));
    auto dout = upload(ctx, std::vector<int32_t>(static_cast<size_t>(rows), 0));
    std::string line;
    for (bool greedy : {true, false}) {
      std::vector<cuda::DeviceSampleParams> params;
      for (int64_t r = 0; r < rows; ++r) {
        const RowCase c{greedy ? SampleParams{} : SampleParams{.temperature = 0.7f, .top_p = 0.9f}, pick_u01(r + 2)};
        params.push_back(device_params(c));
      }
      auto dp = upload(ctx, params);
      double us = 0.0;
      CT_TRY(name, time_us(ctx, [&] {
        return cuda::sample_rows(ctx, {.logits = dl.get(), .rows = rows, .vocab = kVocab, .row_stride = kVocab,
                                       .params = dp.get(), .out_ids = dout.get()});
      }, &us));
      char buf[96];
      std::snprintf(buf, sizeof(buf), "%s%s %.1f us", line.empty() ? "" : "; ", greedy ? "greedy" : "T=0.7 top_p=0.9",
                    us);
      line += buf;
    }
    std::printf("INFO %s rows=%ld: %s\n", name.c_str(), static_cast<long>(rows), line.c_str());
  }
}

}  // namespace

void run_sampling_tests(CudaContext& ctx) {
  Counts counts;
  for (int64_t vocab : {1, 33, 1000, 4097, 102400, 129280}) {
    const std::vector<SampleParams> grid = param_grid(vocab);
    const auto size = static_cast<int64_t>(grid.size());
    for (Logits kind : {Logits::kContinuous, Logits::kTied, Logits::kEqual}) {
      int64_t first = 0;
      for (int64_t rows : {1, 7, 64}) {
        run_case(ctx, vocab, rows, kind, grid, first, 7, counts);  // 7 is prime to the grid size (181)
        first += rows;
      }
      // Small vocabularies: every combination of the grid, with each kind of u01.
      if (vocab <= 4097) run_case(ctx, vocab, 4 * size, kind, grid, 0, 1, counts);
    }
  }
  std::printf("INFO sample_rows: %ld rows, %ld exact, %ld near-boundary (tolerated), %ld wrong\n",
              static_cast<long>(counts.rows), static_cast<long>(counts.exact), static_cast<long>(counts.near),
              static_cast<long>(counts.bad));
  test_distribution(ctx, {.temperature = 1.0f});
  test_distribution(ctx, {.temperature = 0.7f, .top_p = 0.9f, .top_k = 8});
  test_distribution(ctx, {.temperature = 1.3f, .min_p = 0.1f});
  test_bad_args(ctx);
  time_sampling(ctx);
}

}  // namespace dsi::cuda_test
