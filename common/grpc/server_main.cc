#include "common/grpc/server_main.h"

#include <csignal>
#include <cstdio>

#include "absl/strings/str_split.h"
#include "absl/synchronization/notification.h"

namespace a2sf {
namespace {
absl::Notification* g_stop = nullptr;
void HandleSignal(int) {
  if (g_stop != nullptr && !g_stop->HasBeenNotified()) g_stop->Notify();
}
}  // namespace

std::vector<std::string> SplitAddresses(const std::string& comma_separated) {
  return absl::StrSplit(comma_separated, ',', absl::SkipEmpty());
}

void WritePortFile(const std::string& path, int port) {
  if (path.empty()) return;
  if (FILE* f = std::fopen(path.c_str(), "w")) {
    std::fprintf(f, "%d\n", port);
    std::fclose(f);
  }
}

void WaitForTerminationSignal() {
  static absl::Notification stop;
  g_stop = &stop;
  std::signal(SIGINT, HandleSignal);
  std::signal(SIGTERM, HandleSignal);
  stop.WaitForNotification();
}

}  // namespace a2sf
