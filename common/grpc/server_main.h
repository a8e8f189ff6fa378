// Small pieces every server binary's main() needs, kept in one place.
#ifndef A2SF_COMMON_GRPC_SERVER_MAIN_H_
#define A2SF_COMMON_GRPC_SERVER_MAIN_H_

#include <string>
#include <vector>

namespace a2sf {

// "a:1,b:2" -> {"a:1", "b:2"} (empty items dropped).
std::vector<std::string> SplitAddresses(const std::string& comma_separated);

// Writes `port` and a newline to `path` (nothing when `path` is empty), for scripts and tests that
// start a server on port 0.
void WritePortFile(const std::string& path, int port);

// Blocks until the process receives SIGINT or SIGTERM.
void WaitForTerminationSignal();

}  // namespace a2sf

#endif  // A2SF_COMMON_GRPC_SERVER_MAIN_H_
