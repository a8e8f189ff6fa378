#include "common/log.h"

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace a2sf {
namespace {

LogLevel LevelFromEnvironment() {
  const char* env = std::getenv("A2SF_LOG_LEVEL");
  if (env == nullptr) return LogLevel::kInfo;
  std::string value(env);
  if (value == "debug") return LogLevel::kDebug;
  if (value == "warning") return LogLevel::kWarning;
  if (value == "error") return LogLevel::kError;
  return LogLevel::kInfo;
}

std::atomic<int>& MinLevelStorage() {
  static std::atomic<int> level(static_cast<int>(LevelFromEnvironment()));
  return level;
}

const char* LevelLetter(LogLevel level) {
  switch (level) {
    case LogLevel::kDebug:
      return "D";
    case LogLevel::kInfo:
      return "I";
    case LogLevel::kWarning:
      return "W";
    case LogLevel::kError:
      return "E";
  }
  return "?";
}

// The code point of a 3-byte UTF-8 sequence starting at `s` (s[0] in E0..EF), or 0.
uint32_t ThreeByteCodePoint(absl::string_view s) {
  if (s.size() < 3 || (uint8_t(s[1]) & 0xC0) != 0x80 || (uint8_t(s[2]) & 0xC0) != 0x80) return 0;
  return (uint32_t(uint8_t(s[0]) & 0x0F) << 12) | (uint32_t(uint8_t(s[1]) & 0x3F) << 6) | (uint8_t(s[2]) & 0x3F);
}

// Format characters that reorder or separate what a terminal shows: LRM/RLM, the line and paragraph
// separators, the embeddings/overrides and the isolates.
bool IsLayoutControl(uint32_t cp) {
  return cp == 0x200E || cp == 0x200F || (cp >= 0x2028 && cp <= 0x202E) || (cp >= 0x2066 && cp <= 0x2069) ||
         cp == 0x061C;
}

}  // namespace

std::string EscapeLogText(absl::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (size_t i = 0; i < text.size(); ++i) {
    const uint8_t c = uint8_t(text[i]);
    if (c == '\n') {
      out += "\n    ";
    } else if (c < 0x20 || c == 0x7F) {
      absl::StrAppend(&out, absl::StrFormat("\\x%02x", c));
    } else if (c == 0xC2 && i + 1 < text.size() && uint8_t(text[i + 1]) >= 0x80 && uint8_t(text[i + 1]) <= 0x9F) {
      absl::StrAppend(&out, absl::StrFormat("\\u%04x", uint8_t(text[i + 1])));  // C1: U+0080..U+009F
      ++i;
    } else if (c == 0xD8 && i + 1 < text.size() && uint8_t(text[i + 1]) == 0x9C) {
      out += "\\u061c";  // ARABIC LETTER MARK
      ++i;
    } else if (c == 0xE2 && IsLayoutControl(ThreeByteCodePoint(text.substr(i)))) {
      absl::StrAppend(&out, absl::StrFormat("\\u%04x", ThreeByteCodePoint(text.substr(i))));
      i += 2;
    } else {
      out += char(c);
    }
  }
  return out;
}

LogLevel MinLogLevel() { return static_cast<LogLevel>(MinLevelStorage().load()); }

void SetMinLogLevel(LogLevel level) { MinLevelStorage().store(static_cast<int>(level)); }

LogMessage::LogMessage(LogLevel level, const char* file, int line) : level_(level) {
  const char* base = std::strrchr(file, '/');
  header_ = absl::StrCat(LevelLetter(level), " ",
                         absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ", absl::Now(), absl::UTCTimeZone()), " ",
                         base ? base + 1 : file, ":", line, "] ");
}

LogMessage::~LogMessage() {
  const std::string text = absl::StrCat(header_, EscapeLogText(stream_.str()), "\n");
  // One fwrite per line keeps lines from different threads whole.
  std::fwrite(text.data(), 1, text.size(), stderr);
  if (level_ >= LogLevel::kWarning) std::fflush(stderr);
}

}  // namespace a2sf
