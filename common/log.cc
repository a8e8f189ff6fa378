#include "common/log.h"

#include <algorithm>
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

// The length of the valid UTF-8 sequence at the start of `s` (1-4), or 0 when it is not one
// (overlong forms and surrogates included).
size_t Utf8SequenceLength(absl::string_view s) {
  const uint8_t c = uint8_t(s[0]);
  const size_t n = c < 0x80 ? 1 : c >= 0xC2 && c <= 0xDF ? 2 : c >= 0xE0 && c <= 0xEF ? 3 : c >= 0xF0 && c <= 0xF4 ? 4 : 0;
  if (n == 0 || s.size() < n) return 0;
  for (size_t i = 1; i < n; ++i) {
    if ((uint8_t(s[i]) & 0xC0) != 0x80) return 0;
  }
  const uint8_t c1 = uint8_t(s.size() > 1 ? s[1] : 0);
  if ((c == 0xE0 && c1 < 0xA0) || (c == 0xED && c1 > 0x9F) || (c == 0xF0 && c1 < 0x90) || (c == 0xF4 && c1 > 0x8F)) {
    return 0;
  }
  return n;
}

// The code point of a valid sequence of `n` bytes.
uint32_t CodePoint(absl::string_view s, size_t n) {
  static constexpr uint8_t kLeadMask[] = {0, 0x7F, 0x1F, 0x0F, 0x07};
  uint32_t cp = uint8_t(s[0]) & kLeadMask[n];
  for (size_t i = 1; i < n; ++i) cp = (cp << 6) | (uint8_t(s[i]) & 0x3F);
  return cp;
}

// Characters a terminal acts on rather than shows, besides ASCII's controls: the C1 controls, and
// format characters that reorder or separate what it shows (LRM/RLM, ALM, the line and paragraph
// separators, the embeddings/overrides and the isolates).
bool IsTerminalControl(uint32_t cp) {
  return (cp >= 0x80 && cp <= 0x9F) || cp == 0x061C || cp == 0x200E || cp == 0x200F || (cp >= 0x2028 && cp <= 0x202E) ||
         (cp >= 0x2066 && cp <= 0x2069);
}

}  // namespace

std::string EscapeLogText(absl::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (size_t i = 0; i < text.size();) {
    const uint8_t c = uint8_t(text[i]);
    const size_t n = Utf8SequenceLength(text.substr(i));
    if (c == '\n') {
      out += "\n    ";
    } else if (n == 0 || c < 0x20 || c == 0x7F) {  // a control, or a byte that is not UTF-8
      absl::StrAppend(&out, absl::StrFormat("\\x%02x", c));
    } else if (n > 1 && IsTerminalControl(CodePoint(text.substr(i), n))) {
      absl::StrAppend(&out, absl::StrFormat("\\u%04x", CodePoint(text.substr(i), n)));
    } else {
      out.append(text.data() + i, n);
    }
    i += std::max<size_t>(n, 1);
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
