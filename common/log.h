// A minimal thread-safe logger: `A2SF_LOG(INFO) << "text";` writes one line to stderr with a UTC
// timestamp, the level and the source location. Debian's Abseil 20220623 has no absl/log, and the
// services only need plain lines that container runtimes collect from stderr.
//
// Log text often carries what peers sent (a policy name inside a cache manager's error, a client's
// field): every message goes through EscapeLogText, so no peer can forge a line or drive the terminal
// an operator reads it in.
#ifndef A2SF_COMMON_LOG_H_
#define A2SF_COMMON_LOG_H_

#include <sstream>
#include <string>

#include "absl/strings/string_view.h"

namespace a2sf {

// `text` safe to write as part of one log line: a line break inside it continues the entry on a line
// indented by four spaces (a real entry starts with its level letter, so none can be forged), and other
// control characters (carriage return, escape, ...) and bytes that are not UTF-8 (a lone 0x9b is an
// 8-bit terminal's CSI) are written as \xNN; Unicode's C1 controls, line/paragraph separators and bidi
// overrides as \u0085, \u202e, ..., since they could reorder or hide what a terminal shows. Other text,
// valid UTF-8 included, is unchanged.
std::string EscapeLogText(absl::string_view text);

enum class LogLevel { kDebug = 0, kInfo = 1, kWarning = 2, kError = 3 };

// Messages below this level are dropped. Default kInfo; A2SF_LOG_LEVEL=debug|info|warning|error.
LogLevel MinLogLevel();
void SetMinLogLevel(LogLevel level);

class LogMessage {
 public:
  LogMessage(LogLevel level, const char* file, int line);
  ~LogMessage();  // writes the line
  LogMessage(const LogMessage&) = delete;
  LogMessage& operator=(const LogMessage&) = delete;
  std::ostream& stream() { return stream_; }

 private:
  LogLevel level_;
  std::string header_;  // level, time, source: not escaped
  std::ostringstream stream_;
};

}  // namespace a2sf

#define A2SF_LOG_LEVEL_DEBUG ::a2sf::LogLevel::kDebug
#define A2SF_LOG_LEVEL_INFO ::a2sf::LogLevel::kInfo
#define A2SF_LOG_LEVEL_WARNING ::a2sf::LogLevel::kWarning
#define A2SF_LOG_LEVEL_ERROR ::a2sf::LogLevel::kError

// A one-pass for loop (not an if/else) so that the macro nests safely under an unbraced if.
#define A2SF_LOG(severity)                                                                           \
  for (bool a2sf_log_once = A2SF_LOG_LEVEL_##severity >= ::a2sf::MinLogLevel(); a2sf_log_once;       \
       a2sf_log_once = false)                                                                        \
  ::a2sf::LogMessage(A2SF_LOG_LEVEL_##severity, __FILE__, __LINE__).stream()

#endif  // A2SF_COMMON_LOG_H_
