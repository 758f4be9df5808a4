// libFuzzer target: arbitrary bytes as a whole .safetensors file (8-byte little-endian header length, JSON header,
// data). Checks that parsing never crashes and that what it accepts satisfies the documented invariants; also opens
// the bytes through SafeTensorsFile / TensorStore from a memfd, exercising the mmap path and get().
#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <string>

#include "io/safetensors.h"

namespace {

void require(bool cond) {
  if (!cond) __builtin_trap();
}

void check_invariants(const std::vector<dsi::TensorInfo>& tensors, uint64_t data_size) {
  uint64_t prev_end = 0;
  for (const dsi::TensorInfo& t : tensors) {
    require(t.begin <= t.end && t.end <= data_size);
    uint64_t numel = 1;
    for (int64_t d : t.shape) {
      require(d >= 0);
      numel *= static_cast<uint64_t>(d);
    }
    require(t.end - t.begin == numel * dsi::dtype_size(t.dtype));
    if (t.begin != t.end) {
      require(t.begin >= prev_end);  // sorted by offset, no overlaps
      prev_end = t.end;
    }
  }
}

void open_from_memfd(const uint8_t* data, size_t size) {
  int fd = memfd_create("fuzz.safetensors", MFD_CLOEXEC);
  if (fd < 0) return;
  if (write(fd, data, size) == static_cast<ssize_t>(size)) {
    std::string path = "/proc/self/fd/" + std::to_string(fd);
    auto store = dsi::TensorStore::open(path);
    if (store.ok()) {
      for (const std::string& name : store->names()) {
        auto view = store->get(name, {}, {dsi::DType::kF32, dsi::DType::kBF16});
        if (view.ok() && view->nbytes() > 0) {
          // Touch the first and last byte: they must lie inside the mapping.
          const auto* p = static_cast<const volatile uint8_t*>(view->data);
          (void)p[0];
          (void)p[view->nbytes() - 1];
        }
      }
      require(store->unused().empty());
    }
  }
  close(fd);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 8) return 0;
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | data[i];
  if (header_len > size - 8) {
    // Keep most inputs useful: treat the rest of the input as the header.
    header_len = size - 8;
  }
  std::string_view header(reinterpret_cast<const char*>(data + 8), header_len);
  uint64_t data_size = size - 8 - header_len;
  std::map<std::string, std::string> metadata;
  auto tensors = dsi::parse_safetensors_header(header, data_size, "fuzz.safetensors", &metadata);
  if (tensors.ok()) check_invariants(*tensors, data_size);
  else require(!tensors.status().message().empty());
  open_from_memfd(data, size);
  return 0;
}
