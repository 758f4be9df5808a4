#include "model/golden.h"

#include <algorithm>
#include <cmath>
#include <cstring>

namespace dsi {

namespace {

struct GoldenPrompt {
  std::vector<int64_t> ids;
  int64_t prompt_len = 0;
  TensorView logits;  // [n, vocab] f32
};

Result<std::vector<GoldenPrompt>> read_prompts(TensorStore& store, int64_t vocab) {
  std::vector<GoldenPrompt> prompts;
  for (int k = 0; store.contains(str_cat("input_ids.", k)); ++k) {
    GoldenPrompt p;
    DSI_ASSIGN_OR_RETURN(TensorView ids, store.get(str_cat("input_ids.", k), {}, {DType::kI64}));
    if (ids.shape.size() != 1 || ids.shape[0] < 1) {
      return Status::Corrupt(str_cat("input_ids.", k, " must be a non-empty 1-D I64 tensor"));
    }
    p.ids.assign(ids.as<int64_t>(), ids.as<int64_t>() + ids.shape[0]);
    DSI_ASSIGN_OR_RETURN(TensorView len, store.get(str_cat("prompt_len.", k), {1}, {DType::kI64}));
    p.prompt_len = len.as<int64_t>()[0];
    if (p.prompt_len < 1 || p.prompt_len > ids.shape[0]) {
      return Status::Corrupt(str_cat("prompt_len.", k, " = ", p.prompt_len, " is outside [1, ", ids.shape[0], "]"));
    }
    DSI_ASSIGN_OR_RETURN(p.logits, store.get(str_cat("logits.", k), {ids.shape[0], vocab}, {DType::kF32}));
    prompts.push_back(std::move(p));
  }
  if (prompts.empty()) return Status::NotFound("no input_ids.0 in the expected file: not a golden file");
  return prompts;
}

// Copies rows [begin, begin + n) of logits into out at row offset `at`.
void put_rows(const Tensor& logits, int64_t begin, int64_t n, std::vector<float>& out, int64_t at) {
  const int64_t v = logits.dim(1);
  std::memcpy(&out[at * v], logits.data<float>() + begin * v, static_cast<size_t>(n * v) * sizeof(float));
}

// Runs one prompt alone; returns its logits [n, vocab].
Result<std::vector<float>> run_single(Model& model, const GoldenPrompt& p, GoldenMode mode) {
  const int64_t n = static_cast<int64_t>(p.ids.size()), vocab = model.config().vocab_size;
  std::vector<float> out(static_cast<size_t>(n * vocab));
  SimpleKvCache cache(model.kv_layout());
  const int64_t slot = cache.add_sequence();
  const int64_t first = mode == GoldenMode::kFullSequence ? n : p.prompt_len;
  ForwardBatch prefill;
  prefill.all_logits = true;
  cache.add_chunk(prefill, slot, 0, std::vector<int64_t>(p.ids.begin(), p.ids.begin() + first));
  DSI_ASSIGN_OR_RETURN(Tensor logits, model.forward(prefill, cache.cache()));
  put_rows(logits, 0, first, out, 0);
  for (int64_t i = first; i < n; ++i) {
    ForwardBatch step;
    cache.add_chunk(step, slot, i, {p.ids[i]});
    DSI_ASSIGN_OR_RETURN(Tensor l, model.forward(step, cache.cache()));
    put_rows(l, 0, 1, out, i);
  }
  return out;
}

// Runs all prompts together: one batch prefills every prompt, then each step decodes every unfinished one.
Result<std::vector<std::vector<float>>> run_batched(Model& model, const std::vector<GoldenPrompt>& prompts) {
  const int64_t vocab = model.config().vocab_size;
  SimpleKvCache cache(model.kv_layout());
  std::vector<std::vector<float>> out(prompts.size());
  std::vector<int64_t> slots;
  ForwardBatch prefill;
  prefill.all_logits = true;
  for (size_t i = 0; i < prompts.size(); ++i) {
    slots.push_back(cache.add_sequence());
    out[i].resize(prompts[i].ids.size() * vocab);
    const auto& ids = prompts[i].ids;
    cache.add_chunk(prefill, slots[i], 0, std::vector<int64_t>(ids.begin(), ids.begin() + prompts[i].prompt_len));
  }
  DSI_ASSIGN_OR_RETURN(Tensor logits, model.forward(prefill, cache.cache()));
  int64_t row = 0;
  for (size_t i = 0; i < prompts.size(); ++i) {
    put_rows(logits, row, prompts[i].prompt_len, out[i], 0);
    row += prompts[i].prompt_len;
  }
  for (int64_t pos = 1;; ++pos) {
    ForwardBatch step;
    std::vector<size_t> which;
    for (size_t i = 0; i < prompts.size(); ++i) {
      const int64_t at = prompts[i].prompt_len + pos - 1;
      if (at < static_cast<int64_t>(prompts[i].ids.size())) {
        cache.add_chunk(step, slots[i], at, {prompts[i].ids[at]});
        which.push_back(i);
      }
    }
    if (which.empty()) break;
    DSI_ASSIGN_OR_RETURN(Tensor l, model.forward(step, cache.cache()));
    for (size_t j = 0; j < which.size(); ++j) {
      put_rows(l, static_cast<int64_t>(j), 1, out[which[j]], prompts[which[j]].prompt_len + pos - 1);
    }
  }
  return out;
}

// Staggered starts: prompt i is prefilled in step i, in the same forward as one decode token of every earlier
// unfinished prompt (the mixed prefill + decode steps a serving engine makes).
Result<std::vector<std::vector<float>>> run_staggered(Model& model, const std::vector<GoldenPrompt>& prompts) {
  SimpleKvCache cache(model.kv_layout());
  std::vector<std::vector<float>> out(prompts.size());
  std::vector<int64_t> slots(prompts.size(), -1), next(prompts.size(), 0);  // next: first position not yet run
  for (size_t i = 0; i < prompts.size(); ++i) out[i].resize(prompts[i].ids.size() * model.config().vocab_size);
  for (size_t step = 0;; ++step) {
    ForwardBatch batch;
    batch.all_logits = true;
    struct Rows {
      size_t prompt;
      int64_t first, count;
    };
    std::vector<Rows> rows;
    int64_t row = 0;
    for (size_t i = 0; i < prompts.size() && i <= step; ++i) {
      const auto& ids = prompts[i].ids;
      const int64_t n = static_cast<int64_t>(ids.size());
      if (next[i] >= n) continue;
      if (slots[i] < 0) slots[i] = cache.add_sequence();
      const int64_t count = next[i] == 0 ? prompts[i].prompt_len : 1;
      cache.add_chunk(batch, slots[i], next[i],
                      std::vector<int64_t>(ids.begin() + next[i], ids.begin() + next[i] + count));
      rows.push_back({i, next[i], count});
      next[i] += count;
      row += count;
    }
    if (rows.empty()) {
      if (step >= prompts.size()) break;
      continue;
    }
    DSI_ASSIGN_OR_RETURN(Tensor l, model.forward(batch, cache.cache()));
    int64_t at = 0;
    for (const Rows& r : rows) {
      put_rows(l, at, r.count, out[r.prompt], r.first);
      at += r.count;
    }
  }
  return out;
}

int64_t argmax(const float* v, int64_t n) { return std::max_element(v, v + n) - v; }

GoldenPromptResult compare(int index, const GoldenPrompt& p, const std::vector<float>& got, int64_t vocab,
                           const GoldenOptions& options) {
  GoldenPromptResult r;
  r.index = index;
  r.prompt_len = p.prompt_len;
  r.total_len = static_cast<int64_t>(p.ids.size());
  const float* ref = p.logits.as<float>();
  const auto rel = [](double d2, double r2) {
    return std::isfinite(d2) ? std::sqrt(d2 / std::max(r2, 1e-300)) : INFINITY;
  };
  double diff2 = 0, ref2 = 0, part_d2[2] = {0, 0}, part_r2[2] = {0, 0};
  for (int64_t row = 0; row < r.total_len; ++row) {
    double row_d2 = 0, row_r2 = 0;
    for (int64_t v = 0; v < vocab; ++v) {
      const double d = static_cast<double>(got[row * vocab + v]) - ref[row * vocab + v];
      row_d2 += d * d;
      row_r2 += static_cast<double>(ref[row * vocab + v]) * ref[row * vocab + v];
    }
    diff2 += row_d2;
    ref2 += row_r2;
    part_d2[row >= p.prompt_len] += row_d2;
    part_r2[row >= p.prompt_len] += row_r2;
    const double e = rel(row_d2, row_r2);
    if (row == 0 || !(e <= r.worst_row_err)) {
      r.worst_row = row;
      r.worst_row_err = e;
    }
  }
  r.rel_err = rel(diff2, ref2);
  r.prefill_rel_err = rel(part_d2[0], part_r2[0]);
  r.decode_rel_err = rel(part_d2[1], part_r2[1]);
  // Greedy: the logits at position i choose the token at i + 1 (from the end of the prompt on).
  for (int64_t i = p.prompt_len - 1; i < r.total_len; ++i) {
    const float* row = ref + i * vocab;
    std::vector<float> sorted(row, row + vocab);
    std::partial_sort(sorted.begin(), sorted.begin() + 2, sorted.end(), std::greater<>());
    double ms = 0;
    for (int64_t v = 0; v < vocab; ++v) ms += static_cast<double>(row[v]) * row[v];
    const double rms = std::sqrt(ms / static_cast<double>(vocab));
    if (sorted[0] - sorted[1] <= std::max(options.gap_threshold, options.gap_relative * rms)) continue;
    ++r.greedy_total;
    if (argmax(&got[i * vocab], vocab) == argmax(row, vocab)) ++r.greedy_agree;
  }
  return r;
}

}  // namespace

Result<GoldenReport> run_golden(Model& model, const std::string& expected_path, const GoldenOptions& options) {
  DSI_ASSIGN_OR_RETURN(TensorStore store, TensorStore::open(expected_path));
  const int64_t vocab = model.config().vocab_size;
  DSI_ASSIGN_OR_RETURN(std::vector<GoldenPrompt> prompts, read_prompts(store, vocab));
  std::vector<std::vector<float>> got;
  if (options.mode == GoldenMode::kBatched) {
    DSI_ASSIGN_OR_RETURN(got, run_batched(model, prompts));
  } else if (options.mode == GoldenMode::kStaggered) {
    DSI_ASSIGN_OR_RETURN(got, run_staggered(model, prompts));
  } else {
    for (const GoldenPrompt& p : prompts) {
      DSI_ASSIGN_OR_RETURN(std::vector<float> g, run_single(model, p, options.mode));
      got.push_back(std::move(g));
    }
  }
  GoldenReport report;
  report.pass = true;
  for (size_t i = 0; i < prompts.size(); ++i) {
    GoldenPromptResult r = compare(static_cast<int>(i), prompts[i], got[i], vocab, options);
    report.max_rel_err = std::max(report.max_rel_err, r.rel_err);
    report.greedy_agree += r.greedy_agree;
    report.greedy_total += r.greedy_total;
    if (!(r.rel_err <= options.tolerance) || r.greedy_agree != r.greedy_total) report.pass = false;
    report.prompts.push_back(r);
  }
  return report;
}

}  // namespace dsi
