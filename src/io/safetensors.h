// safetensors reading: mmap'd files, single or sharded (model.safetensors.index.json), validated up front.
//
// Every structural problem (header length beyond the file, malformed JSON header, unknown dtype, shape/byte-size
// mismatch, offsets out of range or overlapping, tensors missing from a shard the index names) is a Status that
// names the file and the tensor. Nothing here crashes on bad bytes; the fuzz target tests/fuzz/ checks that.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "core/status.h"
#include "core/tensor.h"

namespace dsi {

struct TensorInfo {
  std::string name;
  DType dtype = DType::kF32;
  Shape shape;
  uint64_t begin = 0;  // byte offsets relative to the start of the data section
  uint64_t end = 0;
  const void* data = nullptr;  // points into the mapping (valid while the owning file lives)
  std::string file;            // file name (for messages)
};

// Parses a safetensors header (the JSON after the 8-byte length) against a data section of `data_size` bytes.
// Pure function over bytes: the unit of fuzzing. `file` is only used in messages. Offsets are checked: in range,
// end >= begin, end - begin == numel * dtype size, no two tensors overlapping. `__metadata__` goes to `metadata`.
Result<std::vector<TensorInfo>> parse_safetensors_header(std::string_view header_json, uint64_t data_size,
                                                         const std::string& file,
                                                         std::map<std::string, std::string>* metadata);

// One mmap'd .safetensors file.
class SafeTensorsFile {
 public:
  static Result<std::unique_ptr<SafeTensorsFile>> open(const std::string& path);
  ~SafeTensorsFile();
  SafeTensorsFile(const SafeTensorsFile&) = delete;
  SafeTensorsFile& operator=(const SafeTensorsFile&) = delete;

  const std::string& path() const { return path_; }
  const std::vector<TensorInfo>& tensors() const { return tensors_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  const TensorInfo* find(std::string_view name) const;

 private:
  SafeTensorsFile() = default;
  std::string path_;
  void* map_ = nullptr;
  size_t map_size_ = 0;
  std::vector<TensorInfo> tensors_;
  std::map<std::string, size_t> index_;
  std::map<std::string, std::string> metadata_;
};

// All tensors of a model directory (model.safetensors, or the shards listed by model.safetensors.index.json).
// Tracks which tensors were read, so a loader can report tensors it did not expect.
// Thread use: open and get from one thread (the loader).
class TensorStore {
 public:
  // `path` is a model directory or a single .safetensors file.
  static Result<TensorStore> open(const std::string& path);

  TensorStore() = default;
  TensorStore(TensorStore&&) noexcept = default;
  TensorStore& operator=(TensorStore&&) noexcept = default;

  bool contains(std::string_view name) const;
  const TensorInfo* find(std::string_view name) const;
  // The named tensor, checked: present, dtype among `allowed` (empty = any), shape equal to `shape` (empty = any).
  // Marks it used. Errors name the file, the tensor, what was found and what was expected.
  Result<TensorView> get(const std::string& name, const Shape& shape = {}, std::vector<DType> allowed = {});
  // Like get, but returns the info (file, dtype, shape) for a caller that wants to slice.
  Result<const TensorInfo*> info(const std::string& name);

  std::vector<std::string> names() const;
  std::vector<std::string> unused() const;  // names never passed to get/info, sorted
  size_t size() const { return by_name_.size(); }

 private:
  std::string source_;  // the path given to open (for messages)
  std::vector<std::unique_ptr<SafeTensorsFile>> files_;
  std::map<std::string, const TensorInfo*, std::less<>> by_name_;
  std::set<std::string, std::less<>> used_;
};

// Writes tensors to a .safetensors file (for tests, conversion and the demo model). Tensors are written in the
// given order; `metadata` goes to `__metadata__`.
struct NamedTensor {
  std::string name;
  TensorView view;
};
Status write_safetensors(const std::string& path, const std::vector<NamedTensor>& tensors,
                         const std::map<std::string, std::string>& metadata = {});

}  // namespace dsi
