// The cache manager's request handling as a fuzz target: an input is a script of calls (OpenSession,
// SubmitStep, ring slots, GetSession, CloseSession, SetSessionPolicy, ListSessions) with fuzzed
// fields, run in-process against CacheManagerService and PolicyAdminService on a CPU store. Built
// with libFuzzer by scripts/fuzz.sh and replayed over the kept corpus by service_corpus_test.
#ifndef A2SF_CACHEMGR_SERVICE_FUZZ_SERVICE_FUZZ_TARGET_H_
#define A2SF_CACHEMGR_SERVICE_FUZZ_SERVICE_FUZZ_TARGET_H_

#include <cstddef>
#include <cstdint>

namespace a2sf::cachemgr {

struct FuzzRunCounts {
  int calls = 0;
  int ok = 0;
  int refused = 0;  // each with a non-empty message and a code other than UNKNOWN/INTERNAL
};

// Runs the script in `data`. Aborts (a fuzz finding) when a call fails with UNKNOWN or INTERNAL or
// without a message, or when the store's accounting disagrees with the open sessions at the end.
FuzzRunCounts RunServiceFuzzInput(const uint8_t* data, size_t size);

}  // namespace a2sf::cachemgr

#endif  // A2SF_CACHEMGR_SERVICE_FUZZ_SERVICE_FUZZ_TARGET_H_
