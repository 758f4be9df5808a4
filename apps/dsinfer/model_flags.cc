#include "apps/dsinfer/model_flags.h"

#include <cstdio>

#ifdef DSI_HAVE_CUDA
#include "model/cuda/cuda_model.h"
#endif

namespace dsi::app {

void add_model_flags(CLI::App& cli, ModelFlags& flags) {
  cli.add_option("--model", flags.model_dir, "Hugging Face model directory (config.json + safetensors)")
      ->required();
  cli.add_option("--device", flags.device, "cpu (optimized kernels), ref (scalar reference kernels) or cuda")
      ->check(CLI::IsMember({"cpu", "ref", "cuda"}));
  cli.add_option("--mla", flags.mla, "MLA form for DeepSeek models: auto (naive prefill, absorbed decode), naive, absorbed")
      ->check(CLI::IsMember({"auto", "naive", "absorbed"}));
  cli.add_option("--fp8", flags.fp8, "FP8 checkpoints with --device cuda: keep (FP8 weights, FP8 GEMMs) or "
                                     "dequantize (f32 weights, as the CPU engine)")
      ->check(CLI::IsMember({"keep", "dequantize"}));
}

Result<std::unique_ptr<Model>> load_model_from_flags(const ModelFlags& flags) {
  const MlaMode mla = flags.mla == "naive" ? MlaMode::kNaive : flags.mla == "absorbed" ? MlaMode::kAbsorbed : MlaMode::kAuto;
  if (flags.device == "cuda") {
#ifdef DSI_HAVE_CUDA
    CudaModelOptions options;
    options.mla_mode = mla;
    options.fp8_weights = flags.fp8 == "keep";
    auto model = load_cuda_model(flags.model_dir, options);
    if (!model.ok()) return model.status().with_context(flags.model_dir);
    return model;
#else
    return Status::Unsupported("this dsinfer was built without the CUDA backend (build with nvcc on the PATH, "
                               "or cmake -DDSI_CUDA=ON); use --device cpu");
#endif
  }
  ModelOptions options;
  options.ops = flags.device == "ref" ? &ref_ops() : &cpu_ops();
  options.mla_mode = mla;
  auto model = load_model(flags.model_dir, options);
  if (!model.ok()) return model.status().with_context(flags.model_dir);
  return model;
}

int report_error(const Status& status) {
  std::fprintf(stderr, "dsinfer: error: %s\n", status.to_string().c_str());
  return 1;
}

}  // namespace dsi::app
