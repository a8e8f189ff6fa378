#include "worker/testing/fixtures.h"

#include <sys/stat.h>

#include <cstdlib>

namespace a2sf::worker::testing {

std::string FixturesDir() {
  const char* env = std::getenv("A2SF_FIXTURES");
  if (env == nullptr || *env == '\0') return "";
  struct stat st;
  const std::string dir(env);
  if (::stat((dir + "/stories260K-dq.bin").c_str(), &st) != 0) return "";
  return dir;
}

}  // namespace a2sf::worker::testing
