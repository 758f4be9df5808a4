// UTF-8 helpers for the tokenizer: lossy sanitizing (U+FFFD like Python's errors="replace"), code point access,
// the GPT-2 byte-level alphabet, and Unicode whitespace.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace dsi::tok {

// Length of the valid UTF-8 sequence at s[i], or 0 if the bytes there are not a complete valid sequence.
int utf8_valid_len(std::string_view s, size_t i);

// For a sequence that starts at s[i] and is cut by the end of s: the number of bytes of a valid prefix (1..3)
// that could still become a valid character, or 0 if the bytes are already invalid.
int utf8_incomplete_prefix_len(std::string_view s, size_t i);

// True if s is valid UTF-8.
bool utf8_is_valid(std::string_view s);

// Replaces each maximal invalid subpart with U+FFFD (WHATWG / Python "replace" semantics).
std::string utf8_sanitize(std::string_view s);

// Decodes one code point at s[i] (s must be valid there); advances i.
uint32_t utf8_next(std::string_view s, size_t& i);
void utf8_append(std::string& out, uint32_t cp);

// Unicode White_Space property (what Rust's char::is_whitespace and Python's str.isspace use, near enough).
bool is_unicode_space(uint32_t cp);

// GPT-2 byte-level alphabet: byte -> code point, and code point -> byte (-1 if not in the alphabet).
uint32_t byte_to_unicode(uint8_t b);
int unicode_to_byte(uint32_t cp);

// The byte-level string ("Ġhello") for raw bytes, and back. byte_level_decode returns false (and leaves out
// untouched) when a character is outside the alphabet.
std::string byte_level_encode(std::string_view raw);
bool byte_level_decode(std::string_view text, std::string& out);

}  // namespace dsi::tok
