// tokenizer_bench DIR FILE [REPEATS]: single-thread encode throughput of dsi_tokenizer on FILE, one document per
// line. Prints JSON: the first (cold cache) pass and the best of the following (warm) passes, in MB/s.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "tokenizer/tokenizer.h"

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: tokenizer_bench DIR FILE [REPEATS]\n");
    return 2;
  }
  int repeats = argc > 3 ? std::atoi(argv[3]) : 3;
  auto t0 = std::chrono::steady_clock::now();
  auto tok = dsi::tok::Tokenizer::load_dir(argv[1]);
  if (!tok.ok()) {
    std::fprintf(stderr, "tokenizer_bench: %s\n", tok.status().to_string().c_str());
    return 1;
  }
  double load_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::ifstream f(argv[2], std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  std::string text = ss.str();
  std::vector<std::string> docs;
  std::istringstream is(text);
  for (std::string l; std::getline(is, l);) docs.push_back(l + "\n");
  double cold = 0, warm = 0;
  size_t n_ids = 0;
  for (int r = 0; r <= repeats; ++r) {
    size_t ids = 0;
    auto a = std::chrono::steady_clock::now();
    for (const auto& d : docs) ids += (*tok)->encode(d).size();
    double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - a).count();
    double mbs = static_cast<double>(text.size()) / s / 1e6;
    if (r == 0) cold = mbs;
    else warm = std::max(warm, mbs);
    n_ids = ids;
  }
  std::printf("{\"bytes\": %zu, \"docs\": %zu, \"ids\": %zu, \"load_seconds\": %.3f, \"cold_mb_per_s\": %.3f, "
              "\"warm_mb_per_s\": %.3f}\n",
              text.size(), docs.size(), n_ids, load_s, cold, warm);
  return 0;
}
