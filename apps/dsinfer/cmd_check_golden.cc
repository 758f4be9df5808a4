// dsinfer check-golden: logits of a model against a reference expected.safetensors.
#include <CLI/CLI.hpp>
#include <cstdio>

#include "apps/dsinfer/commands.h"
#include "apps/dsinfer/model_flags.h"
#include "model/golden.h"

namespace dsi::app {

int cmd_check_golden(int argc, char** argv) {
  CLI::App cli{"Run prefill + incremental decode over the prompts of an expected.safetensors (input_ids.K, "
               "prompt_len.K, logits.K) and compare logits at every position.",
               "dsinfer check-golden"};
  ModelFlags mf;
  add_model_flags(cli, mf);
  std::string expected;
  double tolerance = -1;
  std::string mode = "incremental";
  cli.add_option("--expected", expected, "golden file (default: MODEL/expected.safetensors)");
  cli.add_option("--tolerance", tolerance, "max relative logit error per prompt (default 1e-4 on the CPU (f32 compute), 2e-2 with "
                 "--device cuda (bf16 weights, bf16 KV cache))");
  cli.add_option("--mode", mode, "incremental (prefill + decode), full (one forward), batched (all prompts at once) or staggered "
                 "(prompt i prefilled beside decode steps of the earlier ones)")
      ->check(CLI::IsMember({"incremental", "full", "batched", "staggered"}));
  try {
    cli.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return cli.exit(e);
  }
  if (tolerance < 0) tolerance = mf.device == "cuda" ? 2e-2 : 1e-4;
  auto model = load_model_from_flags(mf);
  if (!model.ok()) return report_error(model.status());
  if (expected.empty()) expected = mf.model_dir + "/expected.safetensors";
  GoldenOptions g;
  g.tolerance = tolerance;
  // bf16 compute on the GPU: greedy agreement is required where the reference's top-2 gap exceeds twice the
  // tolerated error (relative to the row's rms), not at every 1e-3 gap.
  if (mf.device == "cuda") g.gap_relative = 2 * tolerance;
  g.mode = mode == "full"        ? GoldenMode::kFullSequence
           : mode == "batched"   ? GoldenMode::kBatched
           : mode == "staggered" ? GoldenMode::kStaggered
                                 : GoldenMode::kIncremental;
  auto report = run_golden(**model, expected, g);
  if (!report.ok()) return report_error(report.status().with_context(expected));
  for (const auto& p : report->prompts) {
    const bool ok = p.rel_err <= tolerance && p.greedy_agree == p.greedy_total;
    std::printf("prompt %d: prompt_len=%lld total_len=%lld rel_err=%.3g (prompt rows %.3g, generated rows %.3g, "
                "worst row %lld: %.3g) greedy_agree=%d/%d %s\n",
                p.index, static_cast<long long>(p.prompt_len), static_cast<long long>(p.total_len), p.rel_err,
                p.prefill_rel_err, p.decode_rel_err, static_cast<long long>(p.worst_row), p.worst_row_err,
                p.greedy_agree, p.greedy_total, ok ? "ok" : "FAIL");
  }
  std::printf("max_rel_err=%.3g greedy_agree=%d/%d\n", report->max_rel_err, report->greedy_agree,
              report->greedy_total);
  return report->pass ? 0 : 1;
}

}  // namespace dsi::app
