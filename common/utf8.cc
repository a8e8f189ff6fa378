#include "common/utf8.h"

#include <cstdint>

namespace a2sf {

int Utf8SequenceLength(absl::string_view s, size_t i) {
  const auto b = [&](size_t k) { return static_cast<uint8_t>(s[k]); };
  const uint8_t c = b(i);
  int len;
  uint32_t cp;
  if (c < 0x80) return 1;
  if (c >= 0xC2 && c <= 0xDF) {
    len = 2, cp = c & 0x1f;
  } else if (c >= 0xE0 && c <= 0xEF) {
    len = 3, cp = c & 0x0f;
  } else if (c >= 0xF0 && c <= 0xF4) {
    len = 4, cp = c & 0x07;
  } else {
    return 0;
  }
  for (int k = 1; k < len; ++k) {
    if (i + k >= s.size()) {
      // Cut short: check what we have could still start a valid character.
      if (k == 1) return -1;
      break;
    }
    if ((b(i + k) & 0xC0) != 0x80) return 0;
    cp = (cp << 6) | (b(i + k) & 0x3f);
    if (k == 1) {
      // Reject overlongs, surrogates and > U+10FFFF as early as the second byte allows.
      if (len == 3 && c == 0xE0 && b(i + 1) < 0xA0) return 0;
      if (len == 3 && c == 0xED && b(i + 1) >= 0xA0) return 0;
      if (len == 4 && c == 0xF0 && b(i + 1) < 0x90) return 0;
      if (len == 4 && c == 0xF4 && b(i + 1) >= 0x90) return 0;
    }
  }
  if (i + len > s.size()) return -1;
  return len;
}

bool IsValidUtf8(absl::string_view text) {
  for (size_t i = 0; i < text.size();) {
    const int len = Utf8SequenceLength(text, i);
    if (len <= 0) return false;
    i += size_t(len);
  }
  return true;
}

}  // namespace a2sf
