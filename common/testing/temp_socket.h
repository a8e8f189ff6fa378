// Unix-socket paths for tests, unique to the process and to the call: inside a folder made by
// mkdtemp under /tmp (a socket path must stay under ~108 bytes, which Bazel's TEST_TMPDIR is not;
// and a pid alone is not unique: each sandboxed test has its own pid namespace, so two runs of one
// test at once often share a pid). The folder and what is left in it go when the process exits.
//
// Thread-safety: TempSocketPath may be called from any thread.
#ifndef A2SF_COMMON_TESTING_TEMP_SOCKET_H_
#define A2SF_COMMON_TESTING_TEMP_SOCKET_H_

#include <string>

namespace a2sf::testing {

// "<folder>/<name>-<n>.sock", n counting the calls of this process.
std::string TempSocketPath(const std::string& name);

}  // namespace a2sf::testing

#endif  // A2SF_COMMON_TESTING_TEMP_SOCKET_H_
