// dsinfer bench: decode and prefill throughput on a published model shape with random weights, beside the limits
// measured in the same run: on the CPU the memory read bandwidth; on the GPU (--device cuda) the device copy
// bandwidth (decode roofline) and the bf16 GEMM rate (prefill ceiling). A peer's figures (hf_peer.py JSON lines)
// can be attached with --peer.
#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>
#include <thread>
#include <unistd.h>

#include "apps/dsinfer/commands.h"
#include "apps/dsinfer/model_flags.h"
#include "kernels/cpu/membw.h"
#include "model/random_weights.h"
#ifdef DSI_HAVE_CUDA
#include "kernels/cuda/cuda_probe.h"
#include "model/cuda/cuda_model.h"
#endif

namespace dsi::app {

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

// Bytes a decode step must read: every non-expert weight once, the experts the batch touches (expected distinct
// experts under uniform routing: E * (1 - (1 - k/E)^B)), and the KV cache of every sequence.
// fp8_bytes: what an FP8 weight costs where it is held (1 on the GPU, which keeps FP8; 4 on the CPU, which
// dequantizes to f32 at load).
double decode_bytes_per_step(const ModelConfig& c, int64_t batch, int64_t context, double kv_elem_bytes,
                             double fp8_bytes) {
  double dense = 0, per_expert = 0, experts_layers = 0;
  for (const TensorSpec& s : expected_tensors(c)) {
    if (s.name == "model.embed_tokens.weight") continue;  // only `batch` rows are read
    const double bytes = static_cast<double>(shape_numel(s.shape)) *
                         (s.dtype == DType::kF8E4M3 ? fp8_bytes : static_cast<double>(dtype_size(s.dtype)));
    if (s.name.find(".mlp.experts.") != std::string::npos) {
      if (s.name.find(".mlp.experts.0.") != std::string::npos) per_expert += bytes;
    } else {
      dense += bytes;
    }
  }
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) experts_layers += c.is_moe_layer(l) ? 1 : 0;
  double distinct = 0;
  if (c.n_routed_experts > 0) {
    const double e = static_cast<double>(c.n_routed_experts), k = static_cast<double>(c.num_experts_per_tok);
    distinct = e * (1.0 - std::pow(1.0 - k / e, static_cast<double>(batch)));
  }
  per_expert /= std::max<int64_t>(1, static_cast<int64_t>(experts_layers));
  const double kv_width = c.is_deepseek() ? static_cast<double>(c.kv_lora_rank + c.qk_rope_head_dim)
                                          : static_cast<double>(2 * c.num_key_value_heads * c.head_dim);
  const double kv = static_cast<double>(batch * context) * kv_width * kv_elem_bytes * static_cast<double>(c.num_hidden_layers);
  return dense + distinct * per_expert * experts_layers + kv;
}

// Parameters one token multiplies through (matmul FLOPs per token / 2): every weight but the embedding, and of
// the routed experts only the top-k. Attention's score and value FLOPs are not counted.
double active_params(const ModelConfig& c) {
  double params = 0;
  for (const TensorSpec& s : expected_tensors(c)) {
    if (s.name == "model.embed_tokens.weight" || s.name.find("_scale_inv") != std::string::npos) continue;
    const auto n = static_cast<double>(shape_numel(s.shape));
    if (s.name.find(".mlp.experts.") != std::string::npos) {
      params += n * static_cast<double>(c.num_experts_per_tok) / static_cast<double>(c.n_routed_experts);
    } else {
      params += n;
    }
  }
  return params;
}

// cudaProfilerStart/Stop around a bracketed region (no-op unless `bracket`, or without the CUDA backend).
void set_profiler_range(bool bracket, bool on) {
#ifdef DSI_HAVE_CUDA
  if (bracket) cuda::profiler_range(on);
#else
  (void)bracket;
  (void)on;
#endif
}

// `key` of a peer's JSON lines (hf_peer.py) for `batch` and prompt length `prompt`, or null.
nlohmann::ordered_json peer_figure(const std::string& path, int64_t batch, int64_t prompt, const char* key) {
  if (path.empty()) return nullptr;
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) {
    auto j = nlohmann::json::parse(line, nullptr, false);
    if (j.is_object() && j.value("batch", -1) == batch && j.value("prompt", -1) == prompt && j.contains(key)) {
      return j[key];
    }
  }
  return nullptr;
}

std::vector<int64_t> random_ids(std::mt19937& rng, int64_t n, int64_t vocab) {
  std::uniform_int_distribution<int64_t> d(0, vocab - 1);
  std::vector<int64_t> ids(static_cast<size_t>(n));
  for (auto& id : ids) id = d(rng);
  return ids;
}

std::string utc_now() {
  std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

std::string cpu_model() {
  std::ifstream f("/proc/cpuinfo");
  std::string line;
  while (std::getline(f, line)) {
    if (line.rfind("model name", 0) == 0) return line.substr(line.find(':') + 2);
  }
  return "unknown";
}

}  // namespace


int cmd_bench(int argc, char** argv) {
  CLI::App cli{"Decode tokens/s (several batch sizes and contexts) and prefill tokens/s on a model shape with random "
               "weights, with the hardware limits measured in the same run.",
               "dsinfer bench"};
  std::string shape_path, out_dir, commit = "unknown", device = "cpu", peer_path;
  int64_t layers = 4, decode_steps = 8, prefill_tokens = 256;
  std::vector<int64_t> batches = {1, 8}, contexts = {128}, prefill_batches = {1};
  cli.add_option("--shape", shape_path, "config.json of the shape (e.g. ../shared/bench/shapes/deepseek-v2-lite.json)")
      ->required();
  cli.add_option("--device", device, "cpu or cuda")->check(CLI::IsMember({"cpu", "cuda"}));
  cli.add_option("--layers", layers, "layers to keep (default 4: the dense ones first, then MoE; 0 keeps all)")
      ->check(CLI::Range(0, 1000));
  cli.add_option("--batch", batches, "decode batch sizes (default 1 8)");
  cli.add_option("--context", contexts, "tokens in each sequence's cache before decode (default 128; several allowed)");
  cli.add_option("--decode-steps", decode_steps, "timed decode steps (default 8)")->check(CLI::Range(1, 100000));
  cli.add_option("--prefill", prefill_tokens, "prefill length per sequence (default 256)")->check(CLI::Range(1, 1 << 20));
  cli.add_option("--prefill-batch", prefill_batches, "sequences prefilled together (default 1)");
  cli.add_option("--peer", peer_path, "JSON lines of a peer (shared/bench/hf_peer.py) to record beside ours");
  cli.add_option("--out", out_dir, "write the results as JSON to DIR/<device>-<shape>-<date>.json");
  cli.add_option("--commit", commit, "commit id recorded in the results");
  bool check_batching = false;
  double batching_tol = 0;
  cli.add_flag("--check-batching", check_batching,
               "also prefill the largest prefill batch's sequences one at a time and compare their last-token logits "
               "with the batched forward's (printed: the largest and the rms difference over each row's rms)");
  cli.add_option("--batching-tol", batching_tol,
                 "with --check-batching: exit 1 when a row's rms difference over its rms exceeds this (default: "
                 "report only)");
  std::string profiler_range;
  cli.add_option("--cuda-profiler-range", profiler_range,
                 "prefill: bracket the timed prefill of the first prefill batch, decode: the timed decode steps of "
                 "the first batch and context, with cudaProfilerStart/Stop (for ncu/nsys --profile-from-start off)")
      ->check(CLI::IsMember({"prefill", "decode"}));
  try {
    cli.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return cli.exit(e);
  }
  const bool gpu = device == "cuda";
#ifndef DSI_HAVE_CUDA
  if (gpu) return report_error(Status::Unsupported("this dsinfer was built without the CUDA backend"));
#endif
  std::ifstream in(shape_path);
  if (!in) return report_error(Status::NotFound(str_cat("cannot read shape file ", shape_path)));
  std::stringstream text;
  text << in.rdbuf();
  auto parsed = parse_model_config(text.str(), shape_path);
  if (!parsed.ok()) return report_error(parsed.status());
  ModelConfig config = std::move(parsed).value();
  if (layers > 0) config.num_hidden_layers = std::min(config.num_hidden_layers, layers);
  config.num_nextn_predict_layers = 0;
  const std::string shape = std::filesystem::path(shape_path).stem().string();

  // Limits first (the GPU model takes most of the device memory afterwards).
  double membw = 0, copy_gbps = 0, gemm_tflops = 0;
  std::string gpu_name;
#ifdef DSI_HAVE_CUDA
  if (gpu) {
    auto lim = cuda::measure_device_limits(0);
    if (!lim.ok()) return report_error(lim.status());
    copy_gbps = lim->copy_gbps;
    gemm_tflops = lim->bf16_tflops;
    gpu_name = lim->name;
    std::fprintf(stderr, "bench: %s: copy %.0f GB/s, bf16 GEMM %.0f TFLOP/s\n", gpu_name.c_str(), copy_gbps,
                 gemm_tflops);
  }
#endif
  if (!gpu) {
    membw = measure_read_bandwidth_gbps(size_t{1} << 30, 5);
    std::fprintf(stderr, "bench: memory read bandwidth %.1f GB/s\n", membw);
  }
  const double limit_gbps = gpu ? copy_gbps : membw;

  // Random weights through a checkpoint in RAM-backed storage where there is one.
  const std::filesystem::path shm = "/dev/shm";
  const std::filesystem::path base = std::filesystem::is_directory(shm) ? shm : std::filesystem::temp_directory_path();
  const std::string dir = (base / str_cat("dsinfer-bench-", getpid())).string();
  std::filesystem::create_directories(dir);
  const std::string ckpt = dir + "/model.safetensors";
  auto t0 = Clock::now();
  if (Status s = write_random_checkpoint(config, ckpt, 1); !s.ok()) return report_error(s);
  auto store = TensorStore::open(ckpt);
  if (!store.ok()) return report_error(store.status());
  Result<std::unique_ptr<Model>> built = Status::Internal("unreachable");
#ifdef DSI_HAVE_CUDA
  if (gpu) built = build_cuda_model(config, *store, CudaModelOptions{});
#endif
  if (!gpu) built = build_model(config, *store);
  std::filesystem::remove_all(dir);  // the model holds its own copies
  if (!built.ok()) return report_error(built.status());
  Model& model = **built;
  std::fprintf(stderr, "bench: %s, %lld layers, random weights ready in %.1f s\n", shape_path.c_str(),
               static_cast<long long>(config.num_hidden_layers), seconds_since(t0));
  std::mt19937 rng(7);

  // Prefill: `pb` sequences of prefill_tokens in one forward (one untimed run first: plans, workspace).
  std::vector<std::pair<int64_t, double>> prefill;
  for (int64_t pb : prefill_batches) {
    double best = 0;
    for (int rep = 0; rep < 2; ++rep) {
      SimpleKvCache cache(model.kv_layout());
      ForwardBatch b;
      for (int64_t i = 0; i < pb; ++i) {
        cache.add_chunk(b, cache.add_sequence(), 0, random_ids(rng, prefill_tokens, config.vocab_size));
      }
      const bool bracket = gpu && profiler_range == "prefill" && rep == 1 && pb == prefill_batches.front();
      set_profiler_range(bracket, true);
      auto tp = Clock::now();
      auto r = model.forward(b, cache.cache());
      if (!r.ok()) return report_error(r.status());
      best = static_cast<double>(pb * prefill_tokens) / seconds_since(tp);
      set_profiler_range(bracket, false);
    }
    prefill.push_back({pb, best});
    std::fprintf(stderr, "bench: prefill %lld x %lld tokens: %.1f tok/s\n", static_cast<long long>(pb),
                 static_cast<long long>(prefill_tokens), best);
  }
  double batching_diff = 0;  // --check-batching: judged (--batching-tol) after the results are written
  if (check_batching) {
    // The batched prefill (the batched MLA expansion, grouped expert GEMMs over all rows) against each sequence
    // alone: the largest error of a row over that row's rms, and the rows whose argmax agrees.
    const int64_t pb = *std::max_element(prefill_batches.begin(), prefill_batches.end());
    std::vector<std::vector<int64_t>> seqs;
    for (int64_t i = 0; i < pb; ++i) seqs.push_back(random_ids(rng, prefill_tokens + 37 * i, config.vocab_size));
    SimpleKvCache cache(model.kv_layout());
    ForwardBatch b;
    for (const auto& ids : seqs) cache.add_chunk(b, cache.add_sequence(), 0, ids);
    auto together = model.forward(b, cache.cache());
    if (!together.ok()) return report_error(together.status());
    const int64_t vocab = config.vocab_size;
    const std::vector<float> all(together->data<float>(), together->data<float>() + pb * vocab);
    double worst = 0, worst_rms = 0;
    int64_t agree = 0;
    for (int64_t i = 0; i < pb; ++i) {
      SimpleKvCache one_cache(model.kv_layout());
      ForwardBatch one;
      one_cache.add_chunk(one, one_cache.add_sequence(), 0, seqs[i]);
      auto alone = model.forward(one, one_cache.cache());
      if (!alone.ok()) return report_error(alone.status());
      const float* x = alone->data<float>();
      const float* y = all.data() + i * vocab;
      double ss = 0, err = 0, se = 0;
      for (int64_t v = 0; v < vocab; ++v) {
        const double e = std::fabs(static_cast<double>(x[v]) - y[v]);
        ss += static_cast<double>(x[v]) * x[v];
        se += e * e;
        err = std::max(err, e);
      }
      const double rms = std::max(std::sqrt(ss / vocab), 1e-30);
      const double rel = err / rms, rel_rms = std::sqrt(se / vocab) / rms;
      worst = std::max(worst, std::isfinite(rel) ? rel : INFINITY);
      worst_rms = std::max(worst_rms, std::isfinite(rel_rms) ? rel_rms : INFINITY);
      std::fprintf(stderr, "bench: batching check: sequence %lld: max_rel_diff=%.3g rms_rel_diff=%.3g\n",
                   static_cast<long long>(i), rel, rel_rms);
      agree += std::max_element(x, x + vocab) - x == std::max_element(y, y + vocab) - y;
    }
    std::fprintf(stderr,
                 "bench: batching check (%lld sequences of %lld+ tokens): max_rel_diff=%.3g rms_rel_diff=%.3g "
                 "argmax_agree=%lld/%lld\n",
                 static_cast<long long>(pb), static_cast<long long>(prefill_tokens), worst, worst_rms,
                 static_cast<long long>(agree), static_cast<long long>(pb));
    batching_diff = worst_rms;
  }
  const double flops_per_token = 2.0 * active_params(config);
  // The fastest a prefill of `tokens` can go on this GPU: its FLOPs at the measured GEMM rate, or reading every
  // weight it touches once at the copy bandwidth, whichever takes longer (short MoE prefills are bandwidth-bound:
  // 512 tokens of V2-Lite touch nearly all 64 experts of each layer).
  const auto prefill_roofline = [&](int64_t tokens) {
    const double compute_s = static_cast<double>(tokens) * flops_per_token / (gemm_tflops * 1e12);
    const double read_s = decode_bytes_per_step(config, tokens, 0, 2.0, 1.0) / (copy_gbps * 1e9);
    return static_cast<double>(tokens) / std::max(compute_s, read_s);
  };

  nlohmann::ordered_json results = nlohmann::ordered_json::array();
  const std::string date = utc_now();
  auto record = [&](int64_t batch, int64_t context, nlohmann::ordered_json decode, nlohmann::ordered_json roofline,
                    nlohmann::ordered_json bytes, nlohmann::ordered_json prefill_tok_s, int64_t prefill_batch) {
    nlohmann::ordered_json j = {{"date", date},
                                {"device", device},
                                {"gpu", gpu ? nlohmann::ordered_json(gpu_name) : nlohmann::ordered_json(nullptr)},
                                {"cpu", gpu ? nlohmann::ordered_json(nullptr) : nlohmann::ordered_json(cpu_model())},
                                {"commit", commit},
                                {"shape", shape},
                                {"layers", config.num_hidden_layers},
                                {"batch", batch},
                                {"context", context},
                                {"decode_tok_s", decode},
                                {"prefill_tokens", prefill_tokens},
                                {"prefill_batch", prefill_batch},
                                {"prefill_tok_s", prefill_tok_s},
                                {"bytes_per_decode_step", bytes},
                                {"membw_GBps", gpu ? nlohmann::ordered_json(nullptr) : nlohmann::ordered_json(membw)},
                                {"copy_GBps", gpu ? nlohmann::ordered_json(copy_gbps) : nlohmann::ordered_json(nullptr)},
                                {"gemm_bf16_TFLOPs", gpu ? nlohmann::ordered_json(gemm_tflops) : nlohmann::ordered_json(nullptr)},
                                {"roofline_decode_tok_s", roofline},
                                {"peer", peer_path.empty() ? nlohmann::ordered_json(nullptr)
                                                   : nlohmann::ordered_json("hf-transformers (shared/bench/hf_peer.py)")},
                                {"peer_decode_tok_s", decode.is_null() ? nullptr : peer_figure(peer_path, batch, context, "decode_tok_s")},
                                {"peer_prefill_tok_s", prefill_tok_s.is_null() ? nullptr : peer_figure(peer_path, prefill_batch, prefill_tokens, "prefill_tok_s")}};
    // Per layer: the step time (decode: batch tokens; prefill: prefill_batch x prefill_tokens) over the layers,
    // embedding and lm_head included (the V3 slice's per-layer figures).
    const double layers = static_cast<double>(std::max<int64_t>(config.num_hidden_layers, 1));
    if (!decode.is_null()) {
      j["roofline_ratio"] = decode.get<double>() / roofline.get<double>();
      j["decode_us_per_layer"] = static_cast<double>(batch) / decode.get<double>() * 1e6 / layers;
    }
    if (!prefill_tok_s.is_null()) {
      j["prefill_us_per_layer"] =
          static_cast<double>(prefill_batch * prefill_tokens) / prefill_tok_s.get<double>() * 1e6 / layers;
    }
    if (!prefill_tok_s.is_null() && gpu) {
      j["prefill_TFLOPs"] = prefill_tok_s.get<double>() * flops_per_token / 1e12;
      j["prefill_gemm_ratio"] = prefill_tok_s.get<double>() * flops_per_token / 1e12 / gemm_tflops;
      const double bound = prefill_roofline(prefill_batch * prefill_tokens);
      j["prefill_roofline_tok_s"] = bound;
      j["prefill_roofline_ratio"] = prefill_tok_s.get<double>() / bound;
    }
    results.push_back(j);
  };
  for (auto [pb, tok_s] : prefill) record(0, 0, nullptr, nullptr, nullptr, tok_s, pb);

  for (int64_t context : contexts) {
    for (int64_t batch : batches) {
      SimpleKvCache cache(model.kv_layout());
      std::vector<int64_t> slots;
      ForwardBatch warm;
      for (int64_t i = 0; i < batch; ++i) {
        slots.push_back(cache.add_sequence());
        cache.add_chunk(warm, slots.back(), 0, random_ids(rng, context, config.vocab_size));
      }
      // CPU: a real prefill fills the cache. GPU: the blocks are reserved and the decode steps read them as they
      // are (zeros): the same work per step without minutes of long-context prefill.
      if (!gpu) {
        if (auto r = model.forward(warm, cache.cache()); !r.ok()) return report_error(r.status());
      }
      double elapsed = 0;
      const bool bracket =
          gpu && profiler_range == "decode" && batch == batches.front() && context == contexts.front();
      for (int64_t step = -2; step < decode_steps; ++step) {  // two untimed steps
        if (step == 0) set_profiler_range(bracket, true);
        ForwardBatch b;
        for (int64_t i = 0; i < batch; ++i) {
          cache.add_chunk(b, slots[i], context + step + 2, random_ids(rng, 1, config.vocab_size));
        }
        auto ts = Clock::now();
        auto r = model.forward(b, cache.cache());
        if (step >= 0) elapsed += seconds_since(ts);
        if (!r.ok()) return report_error(r.status());
        model.recycle_logits(std::move(*r));  // as the engine does after sampling
      }
      set_profiler_range(bracket, false);
      const double decode_tok_s = static_cast<double>(batch * decode_steps) / elapsed;
      const double bytes = decode_bytes_per_step(config, batch, context + decode_steps / 2 + 2, gpu ? 2.0 : 4.0,
                                                 gpu ? 1.0 : 4.0);
      const double roofline = static_cast<double>(batch) * limit_gbps * 1e9 / bytes;
      std::printf("shape=%s device=%s layers=%lld batch=%lld context=%lld decode_tok_s=%.2f "
                  "roofline_decode_tok_s=%.2f ratio=%.3f\n",
                  shape.c_str(), device.c_str(), static_cast<long long>(config.num_hidden_layers),
                  static_cast<long long>(batch), static_cast<long long>(context), decode_tok_s, roofline,
                  decode_tok_s / roofline);
      std::fflush(stdout);
      record(batch, context, decode_tok_s, roofline, bytes, nullptr, 0);
    }
  }
  for (auto [pb, tok_s] : prefill) {
    std::printf("shape=%s device=%s prefill_batch=%lld prefill_tokens=%lld prefill_tok_s=%.1f", shape.c_str(),
                device.c_str(), static_cast<long long>(pb), static_cast<long long>(prefill_tokens), tok_s);
    if (gpu) {
      const double bound = prefill_roofline(pb * prefill_tokens);
      std::printf(" gemm_ratio=%.3f roofline_prefill_tok_s=%.1f roofline_ratio=%.3f",
                  tok_s * flops_per_token / 1e12 / gemm_tflops, bound, tok_s / bound);
    }
    std::printf("\n");
  }
  if (!out_dir.empty()) {
    std::filesystem::create_directories(out_dir);
    const std::string path = str_cat(out_dir, "/", device, "-", shape, "-", date.substr(0, 10), ".json");
    std::ofstream out(path);
    out << results.dump(2) << "\n";
    std::fprintf(stderr, "bench: results in %s\n", path.c_str());
  }
  if (batching_tol > 0 && !(batching_diff <= batching_tol)) {
    return report_error(Status::Internal(str_cat("batched prefill differs from one sequence at a time: rms_rel_diff ",
                                                 batching_diff, " (--batching-tol ", batching_tol, ")")));
  }
  return 0;
}

}  // namespace dsi::app
