// Small file helpers shared by the io loaders (not a public API of the project).
#pragma once

#include <string>

#include "core/status.h"

namespace dsi {

// The whole file as bytes. Errors name the path: NotFound when it does not exist, IoError otherwise.
Result<std::string> read_file(const std::string& path);

enum class PathKind { kMissing, kFile, kDirectory, kOther };
PathKind path_kind(const std::string& path);

// "dir/name", without doubling a trailing slash.
std::string join_path(const std::string& dir, const std::string& name);

}  // namespace dsi
