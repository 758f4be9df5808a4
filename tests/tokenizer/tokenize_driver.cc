// tokenize_driver: JSON-lines front end to dsi_tokenizer for the differential tests and the benchmark, so they do
// not depend on the dsinfer binary.
//   tokenize_driver encode DIR [--add-special-tokens] [--with-decode]   {"text": s} -> {"ids": [...], "decoded": s}
//   tokenize_driver decode DIR                                          {"ids": [...]} -> {"text": s}
//   tokenize_driver render                                              {"template": t, "context": {...}}
//                                                                       -> {"rendered": s} | {"error": msg}
//   tokenize_driver bench DIR FILE [REPEAT]                             prints {"bytes": n, "seconds": s, "mb_per_s": x}
#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>

#include "tokenizer/chat_template.h"
#include "tokenizer/tokenizer.h"

namespace {

using json = nlohmann::ordered_json;

std::string dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

int run_encode(const dsi::tok::Tokenizer& t, bool special, bool with_decode) {
  std::string line;
  while (std::getline(std::cin, line)) {
    if (line.empty()) continue;
    json in = json::parse(line);
    std::string text = in.at("text").get<std::string>();
    auto ids = t.encode(text, {.add_special_tokens = special});
    json out;
    out["ids"] = ids;
    if (with_decode) {
      auto d = t.decode(ids);
      out["decoded"] = d.ok() ? *d : std::string("<error: ") + d.status().to_string() + ">";
    }
    std::cout << dump(out) << '\n';
  }
  return 0;
}

int run_decode(const dsi::tok::Tokenizer& t) {
  std::string line;
  while (std::getline(std::cin, line)) {
    if (line.empty()) continue;
    json in = json::parse(line);
    auto ids = in.at("ids").get<std::vector<int32_t>>();
    auto d = t.decode(ids);
    json out;
    if (d.ok()) out["text"] = *d;
    else out["error"] = d.status().to_string();
    std::cout << dump(out) << '\n';
  }
  return 0;
}

int run_render() {
  std::string line;
  while (std::getline(std::cin, line)) {
    if (line.empty()) continue;
    json in = json::parse(line);
    auto r = dsi::tok::render_template_json(in.at("template").get<std::string>(), in.at("context").dump());
    json out;
    if (r.ok()) out["rendered"] = *r;
    else out["error"] = r.status().to_string();
    std::cout << dump(out) << '\n';
  }
  return 0;
}

int run_bench(const dsi::tok::Tokenizer& t, const std::string& file, int repeat) {
  std::ifstream f(file, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  std::string text = ss.str();
  // Encode line by line (documents of realistic size), as the oracle run does.
  std::vector<std::string> docs;
  std::istringstream is(text);
  for (std::string l; std::getline(is, l);) docs.push_back(l + "\n");
  size_t n_ids = 0;
  auto t0 = std::chrono::steady_clock::now();
  for (int r = 0; r < repeat; ++r) {
    for (const auto& d : docs) n_ids += t.encode(d).size();
  }
  double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  double bytes = static_cast<double>(text.size()) * repeat;
  json out = {{"bytes", bytes}, {"ids", n_ids}, {"seconds", s}, {"mb_per_s", bytes / s / 1e6}};
  std::cout << dump(out) << '\n';
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: tokenize_driver encode|decode|render|bench ...\n");
    return 2;
  }
  std::string mode = argv[1];
  try {
    if (mode == "render") return run_render();
    if (argc < 3) {
      std::fprintf(stderr, "tokenize_driver %s: missing tokenizer DIR\n", mode.c_str());
      return 2;
    }
    auto t = dsi::tok::Tokenizer::load_dir(argv[2]);
    if (!t.ok()) {
      std::fprintf(stderr, "tokenize_driver: %s\n", t.status().to_string().c_str());
      return 1;
    }
    bool special = false, with_decode = false;
    for (int i = 3; i < argc; ++i) {
      std::string a = argv[i];
      if (a == "--add-special-tokens") special = true;
      if (a == "--with-decode") with_decode = true;
    }
    if (mode == "encode") return run_encode(**t, special, with_decode);
    if (mode == "decode") return run_decode(**t);
    if (mode == "bench" && argc >= 4) return run_bench(**t, argv[3], argc >= 5 ? std::atoi(argv[4]) : 1);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "tokenize_driver: %s\n", e.what());
    return 1;
  }
  std::fprintf(stderr, "tokenize_driver: unknown mode '%s'\n", mode.c_str());
  return 2;
}
