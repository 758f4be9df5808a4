// dsinfer bench: CPU decode and prefill throughput on a published model shape with random weights (a few layers,
// so it fits in memory), beside the memory-bandwidth roofline measured in the same run.
#include <CLI/CLI.hpp>
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

namespace dsi::app {

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

// Bytes a decode step must read: every non-expert weight once, the experts the batch touches (expected distinct
// experts under uniform routing: E * (1 - (1 - k/E)^B)), and the KV cache of every sequence.
double decode_bytes_per_step(const ModelConfig& c, int64_t batch, int64_t context) {
  double dense = 0, per_expert = 0, experts_layers = 0;
  for (const TensorSpec& s : expected_tensors(c)) {
    if (s.name == "model.embed_tokens.weight") continue;  // only `batch` rows are read
    const double bytes = static_cast<double>(shape_numel(s.shape)) *
                         (s.dtype == DType::kF8E4M3 ? 4.0 : static_cast<double>(dtype_size(s.dtype)));
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
  // In the CPU engine weights in F8 are dequantized to F32 at load (4 bytes each); BF16 stays 2 bytes.
  per_expert /= std::max<int64_t>(1, static_cast<int64_t>(experts_layers));
  const double kv_width = c.is_deepseek() ? static_cast<double>(c.kv_lora_rank + c.qk_rope_head_dim)
                                          : static_cast<double>(2 * c.num_key_value_heads * c.head_dim);
  const double kv = static_cast<double>(batch * context) * kv_width * 4.0 * static_cast<double>(c.num_hidden_layers);
  return dense + distinct * per_expert * experts_layers + kv;
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
  CLI::App cli{"CPU benchmark: decode tokens/s (batch 1 and 8 by default) and prefill tokens/s on a model shape "
               "with random weights, with the memory-bandwidth roofline measured in the same run.",
               "dsinfer bench"};
  std::string shape_path, out_dir, commit = "unknown";
  int64_t layers = 4, context = 128, decode_steps = 8, prefill_tokens = 256;
  std::vector<int64_t> batches = {1, 8};
  cli.add_option("--shape", shape_path, "config.json of the shape (e.g. ../shared/bench/shapes/deepseek-v2-lite.json)")
      ->required();
  cli.add_option("--layers", layers, "layers to keep (default 4: the dense ones first, then MoE)")
      ->check(CLI::Range(1, 1000));
  cli.add_option("--batch", batches, "decode batch sizes (default 1 8)");
  cli.add_option("--context", context, "tokens in each sequence's cache before decode (default 128)");
  cli.add_option("--decode-steps", decode_steps, "timed decode steps (default 8)")->check(CLI::Range(1, 100000));
  cli.add_option("--prefill", prefill_tokens, "prefill length (default 256)")->check(CLI::Range(1, 1 << 20));
  cli.add_option("--out", out_dir, "write the results as JSON to DIR/cpu-<date>.json");
  cli.add_option("--commit", commit, "commit id recorded in the results");
  try {
    cli.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return cli.exit(e);
  }
  std::ifstream in(shape_path);
  if (!in) return report_error(Status::NotFound(str_cat("cannot read shape file ", shape_path)));
  std::stringstream text;
  text << in.rdbuf();
  auto parsed = parse_model_config(text.str(), shape_path);
  if (!parsed.ok()) return report_error(parsed.status());
  ModelConfig config = std::move(parsed).value();
  config.num_hidden_layers = std::min(config.num_hidden_layers, layers);
  config.num_nextn_predict_layers = 0;

  const std::string dir = (std::filesystem::temp_directory_path() / str_cat("dsinfer-bench-", getpid())).string();
  std::filesystem::create_directories(dir);
  const std::string ckpt = dir + "/model.safetensors";
  auto t0 = Clock::now();
  if (Status s = write_random_checkpoint(config, ckpt, 1); !s.ok()) return report_error(s);
  auto store = TensorStore::open(ckpt);
  if (!store.ok()) return report_error(store.status());
  auto built = build_model(config, *store);
  if (!built.ok()) return report_error(built.status());
  std::filesystem::remove_all(dir);  // the model holds its own copies
  Model& model = **built;
  std::fprintf(stderr, "bench: %s, %lld layers, random weights ready in %.1f s\n", shape_path.c_str(),
               static_cast<long long>(config.num_hidden_layers), seconds_since(t0));

  const double membw = measure_read_bandwidth_gbps(size_t{1} << 30, 5);
  std::fprintf(stderr, "bench: memory read bandwidth %.1f GB/s\n", membw);
  std::mt19937 rng(7);

  // Prefill: one sequence.
  double prefill_tok_s = 0;
  {
    SimpleKvCache cache(model.kv_layout());
    ForwardBatch b;
    cache.add_chunk(b, cache.add_sequence(), 0, random_ids(rng, prefill_tokens, config.vocab_size));
    auto tp = Clock::now();
    auto r = model.forward(b, cache.cache());
    if (!r.ok()) return report_error(r.status());
    prefill_tok_s = static_cast<double>(prefill_tokens) / seconds_since(tp);
  }
  std::fprintf(stderr, "bench: prefill %lld tokens: %.1f tok/s\n", static_cast<long long>(prefill_tokens),
               prefill_tok_s);

  nlohmann::ordered_json results = nlohmann::ordered_json::array();
  const std::string date = utc_now();
  for (int64_t batch : batches) {
    SimpleKvCache cache(model.kv_layout());
    std::vector<int64_t> slots;
    ForwardBatch warm;
    for (int64_t i = 0; i < batch; ++i) {
      slots.push_back(cache.add_sequence());
      cache.add_chunk(warm, slots.back(), 0, random_ids(rng, context, config.vocab_size));
    }
    if (auto r = model.forward(warm, cache.cache()); !r.ok()) return report_error(r.status());
    double elapsed = 0;
    for (int64_t step = 0; step < decode_steps; ++step) {
      ForwardBatch b;
      for (int64_t i = 0; i < batch; ++i) cache.add_chunk(b, slots[i], context + step, random_ids(rng, 1, config.vocab_size));
      auto ts = Clock::now();
      auto r = model.forward(b, cache.cache());
      elapsed += seconds_since(ts);
      if (!r.ok()) return report_error(r.status());
    }
    const double decode_tok_s = static_cast<double>(batch * decode_steps) / elapsed;
    const double bytes = decode_bytes_per_step(config, batch, context + decode_steps / 2);
    const double roofline = static_cast<double>(batch) * membw * 1e9 / bytes;
    std::printf("shape=%s layers=%lld batch=%lld context=%lld decode_tok_s=%.2f roofline_decode_tok_s=%.2f "
                "ratio=%.3f prefill_tok_s=%.1f membw_GBps=%.1f\n",
                std::filesystem::path(shape_path).stem().c_str(), static_cast<long long>(config.num_hidden_layers),
                static_cast<long long>(batch), static_cast<long long>(context), decode_tok_s, roofline,
                decode_tok_s / roofline, prefill_tok_s, membw);
    results.push_back({{"date", date},
                       {"device", "cpu"},
                       {"cpu", cpu_model()},
                       {"threads", std::thread::hardware_concurrency()},
                       {"gpu", nullptr},
                       {"commit", commit},
                       {"shape", std::filesystem::path(shape_path).stem().string()},
                       {"layers", config.num_hidden_layers},
                       {"batch", batch},
                       {"context", context},
                       {"decode_tok_s", decode_tok_s},
                       {"prefill_tokens", prefill_tokens},
                       {"prefill_tok_s", prefill_tok_s},
                       {"bytes_per_decode_step", bytes},
                       {"membw_GBps", membw},
                       {"copy_GBps", nullptr},
                       {"roofline_decode_tok_s", roofline},
                       {"roofline_ratio", decode_tok_s / roofline},
                       {"peer_decode_tok_s", nullptr}});
  }
  if (!out_dir.empty()) {
    std::filesystem::create_directories(out_dir);
    const std::string path = out_dir + "/cpu-" + date.substr(0, 10) + ".json";
    std::ofstream out(path);
    out << results.dump(2) << "\n";
    std::fprintf(stderr, "bench: results in %s\n", path.c_str());
  }
  return 0;
}

}  // namespace dsi::app
