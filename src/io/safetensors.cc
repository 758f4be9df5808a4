#include "io/safetensors.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <limits>
#include <nlohmann/json.hpp>

#include "io/file_util.h"
#include "io/json_util.h"

namespace dsi {
namespace {

using json = nlohmann::json;

constexpr const char* kIndexName = "model.safetensors.index.json";
constexpr const char* kSingleName = "model.safetensors";

const char* json_type(const json& j) { return j.type_name(); }

// Reads a non-negative JSON integer (rejects floats, negatives and booleans).
bool get_u64(const json& j, uint64_t* out) {
  if (j.is_number_unsigned()) {
    *out = j.get<uint64_t>();
    return true;
  }
  if (j.is_number_integer() && j.get<int64_t>() >= 0) {
    *out = static_cast<uint64_t>(j.get<int64_t>());
    return true;
  }
  return false;
}

// Parses one tensor entry {"dtype": ..., "shape": [...], "data_offsets": [b, e]} into `info`.
Status parse_entry(const std::string& name, const json& entry, uint64_t data_size, const std::string& file,
                   TensorInfo* info) {
  auto where = [&] { return str_cat(file, ": tensor '", name, "': "); };
  if (!entry.is_object()) {
    return Status::Corrupt(str_cat(where(), "header entry is a JSON ", json_type(entry),
                                   ", expected an object with dtype, shape and data_offsets"));
  }
  auto dtype_it = entry.find("dtype");
  if (dtype_it == entry.end() || !dtype_it->is_string()) {
    return Status::Corrupt(str_cat(where(), "'dtype' is missing or not a string"));
  }
  Result<DType> dtype = parse_safetensors_dtype(dtype_it->get_ref<const std::string&>());
  if (!dtype.ok()) return dtype.status().with_context(str_cat(file, ": tensor '", name, "'"));

  auto shape_it = entry.find("shape");
  if (shape_it == entry.end() || !shape_it->is_array()) {
    return Status::Corrupt(str_cat(where(), "'shape' is missing or not an array"));
  }
  Shape shape;
  uint64_t numel = 1;
  bool overflow = false;
  for (const json& d : *shape_it) {
    uint64_t v = 0;
    if (!get_u64(d, &v) || v > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      return Status::Corrupt(str_cat(where(), "shape ", brief_json(*shape_it), " has an entry that is not a non-negative ",
                                     "64-bit integer"));
    }
    shape.push_back(static_cast<int64_t>(v));
    if (!overflow && __builtin_mul_overflow(numel, v, &numel)) overflow = true;
  }
  uint64_t nbytes = 0;
  if (!overflow) overflow = __builtin_mul_overflow(numel, static_cast<uint64_t>(dtype_size(*dtype)), &nbytes);
  if (overflow || numel > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
    return Status::Corrupt(str_cat(where(), "shape ", shape_str(shape), " has more elements than fit in 64 bits"));
  }

  auto off_it = entry.find("data_offsets");
  uint64_t begin = 0, end = 0;
  if (off_it == entry.end() || !off_it->is_array() || off_it->size() != 2 || !get_u64((*off_it)[0], &begin) ||
      !get_u64((*off_it)[1], &end)) {
    return Status::Corrupt(str_cat(where(), "'data_offsets' is ",
                                   off_it == entry.end() ? std::string("missing") : brief_json(*off_it),
                                   ", expected [begin, end] with non-negative integers"));
  }
  if (end < begin) {
    return Status::Corrupt(str_cat(where(), "data_offsets [", begin, ", ", end, "] end before they begin"));
  }
  if (end > data_size) {
    return Status::Corrupt(str_cat(where(), "data_offsets [", begin, ", ", end, "] reach past the data section (",
                                   data_size, " bytes): the file is truncated or corrupt; re-download it"));
  }
  if (end - begin != nbytes) {
    return Status::Corrupt(str_cat(where(), "data_offsets [", begin, ", ", end, "] span ", end - begin,
                                   " bytes, but dtype ", dtype_name(*dtype), " with shape ", shape_str(shape),
                                   " needs ", nbytes, " bytes"));
  }
  info->name = name;
  info->dtype = *dtype;
  info->shape = std::move(shape);
  info->begin = begin;
  info->end = end;
  info->file = file;
  return Status::Ok();
}

Status parse_metadata(const json& meta, const std::string& file, std::map<std::string, std::string>* metadata) {
  if (meta.is_null()) return Status::Ok();
  if (!meta.is_object()) {
    return Status::Corrupt(str_cat(file, ": '__metadata__' is a JSON ", json_type(meta),
                                   ", expected an object of string values"));
  }
  for (const auto& [key, value] : meta.items()) {
    if (!value.is_string()) {
      return Status::Corrupt(str_cat(file, ": '__metadata__' entry '", key, "' is a JSON ", json_type(value),
                                     ", expected a string"));
    }
    if (metadata != nullptr) (*metadata)[key] = value.get<std::string>();
  }
  return Status::Ok();
}

Result<std::vector<TensorInfo>> parse_header_json(const json& header, uint64_t data_size, const std::string& file,
                                                  std::map<std::string, std::string>* metadata) {
  if (!header.is_object()) {
    return Status::Corrupt(str_cat(file, ": header is a JSON ", json_type(header),
                                   ", expected an object mapping tensor names to entries"));
  }
  std::vector<TensorInfo> tensors;
  tensors.reserve(header.size());
  for (const auto& [name, entry] : header.items()) {
    if (name == "__metadata__") {
      DSI_RETURN_IF_ERROR(parse_metadata(entry, file, metadata));
      continue;
    }
    TensorInfo info;
    DSI_RETURN_IF_ERROR(parse_entry(name, entry, data_size, file, &info));
    tensors.push_back(std::move(info));
  }
  // File order; empty tensors first at equal offsets so they never count as overlapping.
  std::sort(tensors.begin(), tensors.end(), [](const TensorInfo& a, const TensorInfo& b) {
    return a.begin != b.begin ? a.begin < b.begin : (a.end != b.end ? a.end < b.end : a.name < b.name);
  });
  const TensorInfo* prev = nullptr;  // the last non-empty tensor
  for (const TensorInfo& t : tensors) {
    if (t.begin == t.end) continue;
    if (prev != nullptr && t.begin < prev->end) {
      return Status::Corrupt(str_cat(file, ": tensor '", t.name, "' (bytes [", t.begin, ", ", t.end,
                                     ")) overlaps tensor '", prev->name, "' (bytes [", prev->begin, ", ", prev->end,
                                     ")): the header is corrupt; re-download or re-convert the file"));
    }
    prev = &t;
  }
  return tensors;
}

std::string join_names(const std::vector<DType>& dtypes) {
  std::string s;
  for (size_t i = 0; i < dtypes.size(); ++i) s += (i ? ", " : "") + std::string(dtype_name(dtypes[i]));
  return s;
}

bool ends_with(const std::string& s, std::string_view suffix) {
  return s.size() >= suffix.size() && std::string_view(s).substr(s.size() - suffix.size()) == suffix;
}

Result<std::vector<std::string>> list_safetensors(const std::string& dir) {
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) return Status::IoError(str_cat(dir, ": cannot list directory: ", std::strerror(errno)));
  std::vector<std::string> names;
  while (const dirent* e = ::readdir(d)) {
    std::string name = e->d_name;
    if (ends_with(name, ".safetensors") && path_kind(join_path(dir, name)) == PathKind::kFile) names.push_back(name);
  }
  ::closedir(d);
  std::sort(names.begin(), names.end());
  return names;
}

}  // namespace

Result<std::vector<TensorInfo>> parse_safetensors_header(std::string_view header_json, uint64_t data_size,
                                                         const std::string& file,
                                                         std::map<std::string, std::string>* metadata) {
  json header;
  try {
    header = json::parse(header_json.begin(), header_json.end());
  } catch (const json::exception& e) {
    return Status::Corrupt(str_cat(file, ": header is not valid JSON (", e.what(),
                                   "): the file is corrupt or not a safetensors file; re-download it"));
  }
  try {
    return parse_header_json(header, data_size, file, metadata);
  } catch (const json::exception& e) {
    return Status::Corrupt(str_cat(file, ": malformed header: ", e.what()));
  }
}

// ---------------------------------------------------------------------------------------------------------------
// SafeTensorsFile

Result<std::unique_ptr<SafeTensorsFile>> SafeTensorsFile::open(const std::string& path) {
  std::unique_ptr<SafeTensorsFile> f(new SafeTensorsFile());
  f->path_ = path;
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    int err = errno;
    if (err == ENOENT) return Status::NotFound(str_cat(path, ": no such file"));
    return Status::IoError(str_cat(path, ": cannot open: ", std::strerror(err)));
  }
  struct stat st;
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    return Status::IoError(str_cat(path, ": not a regular file"));
  }
  auto size = static_cast<uint64_t>(st.st_size);
  if (size < 8) {
    ::close(fd);
    return Status::Corrupt(str_cat(path, ": file is ", size,
                                   " bytes, shorter than the 8-byte header length: the file is truncated; "
                                   "re-download it"));
  }
  void* map = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
  int map_err = errno;
  ::close(fd);
  if (map == MAP_FAILED) return Status::IoError(str_cat(path, ": mmap failed: ", std::strerror(map_err)));
  f->map_ = map;
  f->map_size_ = size;

  const auto* bytes = static_cast<const unsigned char*>(map);
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | bytes[i];  // little-endian
  if (header_len > size - 8) {
    return Status::Corrupt(str_cat(path, ": header length ", header_len, " is beyond the file size (", size,
                                   " bytes, so at most ", size - 8,
                                   "): the file is truncated or not a safetensors file; re-download it"));
  }
  std::string_view header(reinterpret_cast<const char*>(bytes + 8), header_len);
  uint64_t data_size = size - 8 - header_len;
  DSI_ASSIGN_OR_RETURN(f->tensors_, parse_safetensors_header(header, data_size, path, &f->metadata_));
  const unsigned char* data = bytes + 8 + header_len;
  for (size_t i = 0; i < f->tensors_.size(); ++i) {
    f->tensors_[i].data = data + f->tensors_[i].begin;
    f->index_[f->tensors_[i].name] = i;
  }
  return f;
}

SafeTensorsFile::~SafeTensorsFile() {
  if (map_ != nullptr) ::munmap(map_, map_size_);
}

const TensorInfo* SafeTensorsFile::find(std::string_view name) const {
  auto it = index_.find(std::string(name));
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

// ---------------------------------------------------------------------------------------------------------------
// TensorStore

namespace {

// Opens the shards listed by an index file; checks the index and the shards agree exactly.
Status open_sharded(const std::string& dir, std::vector<std::unique_ptr<SafeTensorsFile>>* files,
                    std::map<std::string, const TensorInfo*, std::less<>>* by_name) {
  const std::string index_path = join_path(dir, kIndexName);
  DSI_ASSIGN_OR_RETURN(std::string text, read_file(index_path));
  std::map<std::string, std::string> weight_map;  // tensor -> shard file name
  try {
    json index = json::parse(text);
    if (!index.is_object() || !index.contains("weight_map") || !index["weight_map"].is_object()) {
      return Status::Corrupt(str_cat(index_path, ": expected a JSON object with a 'weight_map' object"));
    }
    for (const auto& [name, file] : index["weight_map"].items()) {
      if (!file.is_string() || file.get_ref<const std::string&>().empty()) {
        return Status::Corrupt(str_cat(index_path, ": weight_map entry for tensor '", name, "' is ", brief_json(file),
                                       ", expected a shard file name"));
      }
      weight_map[name] = file.get<std::string>();
    }
  } catch (const json::exception& e) {
    return Status::Corrupt(str_cat(index_path, ": not valid JSON (", e.what(), "): re-download it"));
  }
  std::map<std::string, const SafeTensorsFile*> shards;  // shard name -> opened file
  for (const auto& [name, shard] : weight_map) {
    if (shards.count(shard)) continue;
    std::string shard_path = join_path(dir, shard);
    if (path_kind(shard_path) != PathKind::kFile) {
      return Status::NotFound(str_cat(index_path, " maps tensor '", name, "' to shard '", shard, "', but ",
                                      shard_path, " does not exist: the download is incomplete; download the "
                                      "missing shard"));
    }
    DSI_ASSIGN_OR_RETURN(auto file, SafeTensorsFile::open(shard_path));
    shards[shard] = file.get();
    files->push_back(std::move(file));
  }
  for (const auto& [name, shard] : weight_map) {
    const TensorInfo* info = shards[shard]->find(name);
    if (info == nullptr) {
      return Status::Corrupt(str_cat(index_path, " maps tensor '", name, "' to ", shards[shard]->path(),
                                     ", but that file does not contain it: the index and the shards disagree; "
                                     "re-download them"));
    }
    (*by_name)[name] = info;
  }
  for (const auto& [shard, file] : shards) {
    for (const TensorInfo& t : file->tensors()) {
      auto it = weight_map.find(t.name);
      if (it == weight_map.end()) {
        return Status::Corrupt(str_cat(file->path(), ": tensor '", t.name, "' is not listed in ", index_path,
                                       ": the index and the shards disagree; re-download them"));
      }
      if (it->second != shard) {
        return Status::Corrupt(str_cat(file->path(), ": tensor '", t.name, "' is also here, but ", index_path,
                                       " maps it to '", it->second, "': the index and the shards disagree"));
      }
    }
  }
  return Status::Ok();
}

}  // namespace

Result<TensorStore> TensorStore::open(const std::string& path) {
  TensorStore store;
  store.source_ = path;
  std::vector<std::string> singles;  // files to open without an index
  PathKind kind = path_kind(path);
  if (kind == PathKind::kMissing) {
    return Status::NotFound(str_cat(path, ": no such file or directory (expected a Hugging Face model directory "
                                          "or a .safetensors file)"));
  }
  if (kind == PathKind::kFile) {
    singles.push_back(path);
  } else if (kind != PathKind::kDirectory) {
    return Status::InvalidArgument(str_cat(path, ": not a file or directory"));
  } else if (path_kind(join_path(path, kIndexName)) == PathKind::kFile) {
    DSI_RETURN_IF_ERROR(open_sharded(path, &store.files_, &store.by_name_));
    return store;
  } else if (path_kind(join_path(path, kSingleName)) == PathKind::kFile) {
    singles.push_back(join_path(path, kSingleName));
  } else {
    DSI_ASSIGN_OR_RETURN(std::vector<std::string> found, list_safetensors(path));
    if (found.empty()) {
      return Status::NotFound(str_cat(path, ": no ", kSingleName, ", ", kIndexName,
                                      " or *.safetensors file: expected a Hugging Face model directory"));
    }
    if (found.size() > 1) {
      std::string list;
      for (const auto& f : found) list += (list.empty() ? "" : ", ") + f;
      return Status::InvalidArgument(str_cat(path, ": several .safetensors files (", list, ") but no ", kIndexName,
                                             ": add the index file or pass one file"));
    }
    singles.push_back(join_path(path, found[0]));
  }
  for (const std::string& file_path : singles) {
    DSI_ASSIGN_OR_RETURN(auto file, SafeTensorsFile::open(file_path));
    for (const TensorInfo& t : file->tensors()) store.by_name_[t.name] = &t;
    store.files_.push_back(std::move(file));
  }
  return store;
}

bool TensorStore::contains(std::string_view name) const { return by_name_.find(name) != by_name_.end(); }

const TensorInfo* TensorStore::find(std::string_view name) const {
  auto it = by_name_.find(name);
  return it == by_name_.end() ? nullptr : it->second;
}

Result<const TensorInfo*> TensorStore::info(const std::string& name) {
  const TensorInfo* t = find(name);
  if (t == nullptr) {
    return Status::NotFound(str_cat(source_, ": tensor '", name, "' not found (", by_name_.size(),
                                    " tensors present): the checkpoint does not match config.json, or is "
                                    "incomplete"));
  }
  used_.insert(name);
  return t;
}

Result<TensorView> TensorStore::get(const std::string& name, const Shape& shape, std::vector<DType> allowed) {
  DSI_ASSIGN_OR_RETURN(const TensorInfo* t, info(name));
  if (!allowed.empty() && std::find(allowed.begin(), allowed.end(), t->dtype) == allowed.end()) {
    return Status::InvalidArgument(str_cat(t->file, ": tensor '", name, "' has dtype ", dtype_name(t->dtype),
                                           ", expected ", allowed.size() > 1 ? "one of " : "", join_names(allowed)));
  }
  if (!shape.empty() && shape != t->shape) {
    return Status::InvalidArgument(str_cat(t->file, ": tensor '", name, "' has shape ", shape_str(t->shape),
                                           ", expected ", shape_str(shape),
                                           ": check that config.json matches the weights"));
  }
  return TensorView{t->data, t->dtype, t->shape};
}

std::vector<std::string> TensorStore::names() const {
  std::vector<std::string> out;
  out.reserve(by_name_.size());
  for (const auto& kv : by_name_) out.push_back(kv.first);
  return out;
}

std::vector<std::string> TensorStore::unused() const {
  std::vector<std::string> out;
  for (const auto& kv : by_name_) {
    if (!used_.count(kv.first)) out.push_back(kv.first);
  }
  return out;
}

// ---------------------------------------------------------------------------------------------------------------
// Writing

Status write_safetensors(const std::string& path, const std::vector<NamedTensor>& tensors,
                         const std::map<std::string, std::string>& metadata) {
  std::string header;
  try {
    nlohmann::ordered_json j = nlohmann::ordered_json::object();
    if (!metadata.empty()) {
      nlohmann::ordered_json meta = nlohmann::ordered_json::object();
      for (const auto& [k, v] : metadata) meta[k] = v;
      j["__metadata__"] = std::move(meta);
    }
    uint64_t offset = 0;
    for (const NamedTensor& t : tensors) {
      if (t.name == "__metadata__" || j.contains(t.name)) {
        return Status::InvalidArgument(str_cat(path, ": tensor name '", t.name, "' is reserved or repeated"));
      }
      for (int64_t d : t.view.shape) {
        if (d < 0) {
          return Status::InvalidArgument(str_cat(path, ": tensor '", t.name, "' has a negative dimension in ",
                                                 shape_str(t.view.shape)));
        }
      }
      uint64_t nbytes = t.view.nbytes();
      if (nbytes > 0 && t.view.data == nullptr) {
        return Status::InvalidArgument(str_cat(path, ": tensor '", t.name, "' has no data"));
      }
      j[t.name] = {{"dtype", dtype_name(t.view.dtype)},
                   {"shape", t.view.shape},
                   {"data_offsets", {offset, offset + nbytes}}};
      offset += nbytes;
    }
    header = j.dump();
  } catch (const nlohmann::json::exception& e) {
    return Status::InvalidArgument(str_cat(path, ": cannot encode the header: ", e.what()));
  }
  header.append((8 - header.size() % 8) % 8, ' ');  // data starts 8-byte aligned, as Hugging Face writes it

  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (f == nullptr) return Status::IoError(str_cat(path, ": cannot create: ", std::strerror(errno)));
  unsigned char len[8];
  uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) len[i] = static_cast<unsigned char>(n >> (8 * i));
  bool ok = std::fwrite(len, 1, 8, f) == 8 && std::fwrite(header.data(), 1, header.size(), f) == header.size();
  for (const NamedTensor& t : tensors) {
    size_t nbytes = t.view.nbytes();
    if (ok && nbytes > 0) ok = std::fwrite(t.view.data, 1, nbytes, f) == nbytes;
  }
  int err = ok ? 0 : errno;
  if (std::fclose(f) != 0 && ok) {
    ok = false;
    err = errno;
  }
  if (!ok) return Status::IoError(str_cat(path, ": write failed: ", std::strerror(err), " (disk full?)"));
  return Status::Ok();
}

}  // namespace dsi
