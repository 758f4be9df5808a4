#include "model/random_weights.h"

#include <algorithm>
#include <cmath>
#include <thread>

#include "io/safetensors.h"

namespace dsi {

namespace {

void add_linear(std::vector<TensorSpec>& out, const ModelConfig& c, const std::string& name, int64_t out_f,
                int64_t in_f, bool quantizable = true) {
  const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(in_f)));
  if (c.quant.fp8 && quantizable) {
    out.push_back({name + ".weight", {out_f, in_f}, DType::kF8E4M3, scale});
    out.push_back({name + ".weight_scale_inv",
                   {(out_f + c.quant.block_n - 1) / c.quant.block_n, (in_f + c.quant.block_k - 1) / c.quant.block_k},
                   DType::kF32, scale});
  } else {
    out.push_back({name + ".weight", {out_f, in_f}, DType::kBF16, scale});
  }
}

void add_norm(std::vector<TensorSpec>& out, const std::string& name, int64_t n) {
  out.push_back({name, {n}, DType::kBF16, 0.0f, true});
}

void add_mlp(std::vector<TensorSpec>& out, const ModelConfig& c, const std::string& p, int64_t inter) {
  add_linear(out, c, p + ".gate_proj", inter, c.hidden_size);
  add_linear(out, c, p + ".up_proj", inter, c.hidden_size);
  add_linear(out, c, p + ".down_proj", c.hidden_size, inter);
}

}  // namespace

std::vector<TensorSpec> expected_tensors(const ModelConfig& c) {
  std::vector<TensorSpec> out;
  const int64_t h = c.hidden_size;
  out.push_back({"model.embed_tokens.weight", {c.vocab_size, h}, DType::kBF16, 1.0f});
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    const std::string p = str_cat("model.layers.", l);
    add_norm(out, p + ".input_layernorm.weight", h);
    add_norm(out, p + ".post_attention_layernorm.weight", h);
    const std::string a = p + ".self_attn";
    if (c.is_deepseek()) {
      const int64_t qk = c.qk_head_dim(), heads = c.num_attention_heads;
      if (c.q_lora_rank > 0) {
        add_linear(out, c, a + ".q_a_proj", c.q_lora_rank, h);
        add_norm(out, a + ".q_a_layernorm.weight", c.q_lora_rank);
        add_linear(out, c, a + ".q_b_proj", heads * qk, c.q_lora_rank);
      } else {
        add_linear(out, c, a + ".q_proj", heads * qk, h);
      }
      add_linear(out, c, a + ".kv_a_proj_with_mqa", c.kv_lora_rank + c.qk_rope_head_dim, h);
      add_norm(out, a + ".kv_a_layernorm.weight", c.kv_lora_rank);
      add_linear(out, c, a + ".kv_b_proj", heads * (c.qk_nope_head_dim + c.v_head_dim), c.kv_lora_rank);
      add_linear(out, c, a + ".o_proj", h, heads * c.v_head_dim);
      if (c.is_moe_layer(l)) {
        add_linear(out, c, p + ".mlp.gate", c.n_routed_experts, h, false);
        if (c.topk_method == TopkMethod::kNoauxTc) {
          out.push_back({p + ".mlp.gate.e_score_correction_bias", {c.n_routed_experts}, DType::kF32, 0.0f, false});
        }
        for (int64_t e = 0; e < c.n_routed_experts; ++e) {
          add_mlp(out, c, str_cat(p, ".mlp.experts.", e), c.moe_intermediate_size);
        }
        if (c.n_shared_experts > 0) {
          add_mlp(out, c, p + ".mlp.shared_experts", c.moe_intermediate_size * c.n_shared_experts);
        }
      } else {
        add_mlp(out, c, p + ".mlp", c.intermediate_size);
      }
    } else {
      const int64_t d = c.head_dim, q = c.num_attention_heads * d, kv = c.num_key_value_heads * d;
      add_linear(out, c, a + ".q_proj", q, h);
      add_linear(out, c, a + ".k_proj", kv, h);
      add_linear(out, c, a + ".v_proj", kv, h);
      add_linear(out, c, a + ".o_proj", h, q);
      if (c.attention_bias) {
        for (auto [n, size] : {std::pair{".q_proj.bias", q}, {".k_proj.bias", kv}, {".v_proj.bias", kv}}) {
          out.push_back({a + n, {size}, DType::kBF16, 0.1f});
        }
        if (c.arch == Arch::kLlama) out.push_back({a + ".o_proj.bias", {h}, DType::kBF16, 0.1f});
      }
      add_mlp(out, c, p + ".mlp", c.intermediate_size);
    }
  }
  add_norm(out, "model.norm.weight", h);
  if (!c.tie_word_embeddings) add_linear(out, c, "lm_head", c.vocab_size, h, false);
  return out;
}

namespace {
constexpr int64_t kParallelFill = int64_t{1} << 20;  // elements; smaller tensors keep the one sequential stream
// Calls fill(i, r) for every i < n with r a 64-bit random value from the stream of i's chunk (kParallelFill
// elements, seeded from `seed` and the chunk index), on all cores.
template <class Fill>
void fill_chunks(int64_t n, uint64_t seed, Fill fill) {
  const int64_t chunks = (n + kParallelFill - 1) / kParallelFill;
  const int64_t workers = std::max<int64_t>(1, std::min<int64_t>(chunks, std::thread::hardware_concurrency()));
  std::vector<std::thread> pool;
  for (int64_t w = 0; w < workers; ++w) {
    pool.emplace_back([=] {
      for (int64_t c = w; c < chunks; c += workers) {
        uint64_t st = seed + static_cast<uint64_t>(c) * 0x9E3779B97F4A7C15ull;
        st = (st ^ (st >> 31)) * 0xBF58476D1CE4E5B9ull | 1;
        for (int64_t i = c * kParallelFill; i < std::min(n, (c + 1) * kParallelFill); ++i) {
          st ^= st >> 12;
          st ^= st << 25;
          st ^= st >> 27;
          fill(i, st * 0x2545F4914F6CDD1Dull);
        }
      }
    });
  }
  for (std::thread& th : pool) th.join();
}

}  // namespace

Status write_random_checkpoint(const ModelConfig& config, const std::string& path, uint64_t seed) {
  std::vector<TensorSpec> specs = expected_tensors(config);
  std::vector<Tensor> tensors;
  tensors.reserve(specs.size());
  uint64_t state = seed * 0x9E3779B97F4A7C15ull + 1;
  auto next_uniform = [&state]() {  // xorshift64*, in [-1, 1)
    state ^= state >> 12;
    state ^= state << 25;
    state ^= state >> 27;
    return static_cast<float>(static_cast<double>((state * 0x2545F4914F6CDD1Dull) >> 11) * 0x1.0p-52 - 1.0);
  };
  for (const TensorSpec& s : specs) {
    Tensor t(s.dtype, s.shape);
    const int64_t n = t.numel();
    const float amp = s.scale * 1.7320508f;  // uniform with standard deviation s.scale
    // Large tensors (benchmark shapes): chunks with their own streams, filled by all cores; the values depend on
    // the seed and the tensor's index, not on the thread count.
    const uint64_t tensor_seed = state ^ (0xD1B54A32D192ED03ull * (tensors.size() + 1));
    switch (s.dtype) {
      case DType::kBF16: {
        auto* d = t.data<uint16_t>();
        if (n < kParallelFill || s.ones) {
          for (int64_t i = 0; i < n; ++i) d[i] = f32_to_bf16(s.ones ? 1.0f : amp * next_uniform());
        } else {
          fill_chunks(n, tensor_seed, [d, amp](int64_t i, uint64_t r) {
            const double u = static_cast<double>(r >> 11) * 0x1.0p-52 - 1.0;
            d[i] = f32_to_bf16(amp * static_cast<float>(u));
          });
        }
        break;
      }
      case DType::kF8E4M3: {
        // Random codes with |value| <= 240; the block scale brings them to the target spread.
        auto* d = t.data<uint8_t>();
        auto code = [](uint64_t r) {
          const auto b = static_cast<uint8_t>(r >> 56);
          return static_cast<uint8_t>((b & 0x80) | std::min(b & 0x7f, 0x77));  // |value| <= 240, no NaN
        };
        if (n < kParallelFill) {
          for (int64_t i = 0; i < n; ++i) {
            state = state * 6364136223846793005ull + 1442695040888963407ull;
            d[i] = code(state);
          }
        } else {
          fill_chunks(n, tensor_seed, [d, code](int64_t i, uint64_t r) { d[i] = code(r); });
        }
        break;
      }
      case DType::kF32: {
        auto* d = t.data<float>();
        // FP8 block scales: fp8 codes above are within +-240 with rms ~ 100; scale to the target spread.
        const bool block_scale = s.name.size() > 16 && s.name.ends_with("_scale_inv");
        for (int64_t i = 0; i < n; ++i) d[i] = block_scale ? s.scale / 100.0f : s.scale * next_uniform();
        break;
      }
      default:
        return Status::Internal(str_cat("random weights: unexpected dtype for ", s.name));
    }
    tensors.push_back(std::move(t));
  }
  std::vector<NamedTensor> named;
  for (size_t i = 0; i < specs.size(); ++i) named.push_back({specs[i].name, tensors[i].view()});
  return write_safetensors(path, named, {{"format", "pt"}, {"dsinfer", "random weights"}});
}

}  // namespace dsi
