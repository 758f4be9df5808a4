// PCRE2 10.42 (Debian 12) knows Unicode 14; Hugging Face tokenizers (Oniguruma 6.9.8) know Unicode 15.0. This
// adds the Unicode 15.0 code points to \p{L}, \p{M}, \p{N}, \p{P} and \p{S} in a pattern so the splits agree.
#pragma once

#include <string>

namespace dsi::tok {

std::string augment_unicode15(const std::string& pattern);

}  // namespace dsi::tok
