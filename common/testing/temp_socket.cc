#include "common/testing/temp_socket.h"

#include <stdlib.h>

#include <atomic>
#include <cstdio>
#include <filesystem>

namespace a2sf::testing {
namespace {

void RemoveFolder();

// Never destroyed: RemoveFolder runs at exit, after function-local statics built later are gone.
const std::string& Folder() {
  static const std::string* const folder = [] {
    char pattern[] = "/tmp/a2sf-test-XXXXXX";
    if (mkdtemp(pattern) == nullptr) {
      std::perror("mkdtemp under /tmp");
      std::abort();
    }
    std::atexit(RemoveFolder);
    return new std::string(pattern);
  }();
  return *folder;
}

void RemoveFolder() {
  std::error_code ignored;
  std::filesystem::remove_all(Folder(), ignored);
}

}  // namespace

std::string TempSocketPath(const std::string& name) {
  static std::atomic<int> next{0};
  return Folder() + "/" + name + "-" + std::to_string(next++) + ".sock";
}

}  // namespace a2sf::testing
