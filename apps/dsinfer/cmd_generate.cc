// dsinfer generate: prefill a prompt, then decode token by token through the KV cache.
#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <sstream>

#include "apps/dsinfer/commands.h"
#include "apps/dsinfer/model_flags.h"
#include "engine/sampler.h"
#include "tokenizer/tokenizer.h"

namespace dsi::app {

namespace {

Result<std::vector<int64_t>> parse_ids(const std::string& text) {
  std::vector<int64_t> ids;
  std::stringstream ss(text);
  std::string item;
  while (std::getline(ss, item, ',')) {
    try {
      size_t used = 0;
      long long v = std::stoll(item, &used);
      if (used != item.size()) throw std::invalid_argument(item);
      ids.push_back(v);
    } catch (const std::exception&) {
      return Status::InvalidArgument(str_cat("--prompt-ids: '", item, "' is not an integer (expected e.g. 1,2,3)"));
    }
  }
  if (ids.empty()) return Status::InvalidArgument("--prompt-ids is empty");
  return ids;
}

}  // namespace

int cmd_generate(int argc, char** argv) {
  CLI::App cli{"Generate tokens from a prompt (greedy by default).", "dsinfer generate"};
  ModelFlags mf;
  add_model_flags(cli, mf);
  std::string prompt_ids, prompt;
  int64_t max_tokens = 32;
  SamplingParams sp;
  uint64_t seed = 0;
  bool ignore_eos = false;
  auto* ids_opt = cli.add_option("--prompt-ids", prompt_ids, "comma-separated token ids, e.g. 1,2,3");
  auto* text_opt = cli.add_option("--prompt", prompt, "prompt text (needs tokenizer.json in the model directory)");
  ids_opt->excludes(text_opt);
  cli.add_option("--max-tokens", max_tokens, "tokens to generate (default 32)")->check(CLI::Range(1, 1 << 20));
  cli.add_option("--temperature", sp.temperature, "0 = greedy (default)")->check(CLI::Range(0.0, 100.0));
  cli.add_option("--top-p", sp.top_p, "nucleus sampling mass (default 1)")->check(CLI::Range(0.0, 1.0));
  cli.add_option("--top-k", sp.top_k, "keep the k most likely tokens (0 = all)")->check(CLI::NonNegativeNumber);
  cli.add_option("--seed", seed, "random seed (same seed, same output)");
  cli.add_flag("--ignore-eos", ignore_eos, "keep generating after the end-of-sequence token");
  try {
    cli.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return cli.exit(e);
  }
  if (prompt_ids.empty() && prompt.empty()) {
    return report_error(Status::InvalidArgument("give --prompt-ids 1,2,3 or --prompt TEXT"));
  }

  std::unique_ptr<tok::Tokenizer> tokenizer;
  if (std::filesystem::exists(mf.model_dir + "/tokenizer.json")) {
    auto loaded_tok = tok::Tokenizer::load_dir(mf.model_dir);
    if (!loaded_tok.ok()) return report_error(loaded_tok.status());
    tokenizer = std::move(loaded_tok).value();
  }
  std::vector<int64_t> ids;
  if (!prompt.empty()) {
    if (!tokenizer) {
      return report_error(Status::NotFound(str_cat("no tokenizer.json in ", mf.model_dir,
                                                   ": --prompt needs one; use --prompt-ids instead")));
    }
    for (int32_t id : tokenizer->encode(prompt, /*add_special_tokens=*/true)) ids.push_back(id);
  } else {
    auto parsed = parse_ids(prompt_ids);
    if (!parsed.ok()) return report_error(parsed.status());
    ids = std::move(parsed).value();
  }

  auto loaded = load_model_from_flags(mf);
  if (!loaded.ok()) return report_error(loaded.status());
  Model& model = **loaded;
  const ModelConfig& config = model.config();
  SimpleKvCache cache(model.kv_layout());
  const int64_t slot = cache.add_sequence();
  Sampler sampler(seed);

  std::vector<int64_t> generated;
  const auto t0 = std::chrono::steady_clock::now();
  ForwardBatch batch;
  cache.add_chunk(batch, slot, 0, ids);
  int64_t pos = static_cast<int64_t>(ids.size());
  double prefill_s = 0;
  for (int64_t step = 0; step < max_tokens; ++step) {
    auto logits = model.forward(batch, cache.cache());
    if (!logits.ok()) return report_error(logits.status());
    if (step == 0) prefill_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const int64_t next = sampler.sample(logits->data<float>(), config.vocab_size, sp);
    generated.push_back(next);
    const bool eos = std::find(config.eos_token_ids.begin(), config.eos_token_ids.end(), next) !=
                     config.eos_token_ids.end();
    if (eos && !ignore_eos) break;
    batch = ForwardBatch();
    cache.add_chunk(batch, slot, pos++, {next});
  }
  const double total_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

  std::printf("prompt_ids:");
  for (int64_t id : ids) std::printf(" %lld", static_cast<long long>(id));
  std::printf("\ngenerated_ids:");
  for (int64_t id : generated) std::printf(" %lld", static_cast<long long>(id));
  std::printf("\n");
  if (tokenizer) {
    std::vector<int32_t> ids32(generated.begin(), generated.end());
    auto text = tokenizer->decode(ids32);
    if (text.ok()) std::printf("text: %s\n", text->c_str());
    else std::fprintf(stderr, "dsinfer: warning: cannot decode: %s\n", text.status().to_string().c_str());
  }
  const double decode_s = total_s - prefill_s;
  std::fprintf(stderr, "prefill: %zu tokens in %.3f s; decode: %zu tokens in %.3f s (%.1f tok/s)\n", ids.size(),
               prefill_s, generated.size() > 0 ? generated.size() - 1 : 0, decode_s,
               generated.size() > 1 ? (generated.size() - 1) / decode_s : 0.0);
  return 0;
}

}  // namespace dsi::app
