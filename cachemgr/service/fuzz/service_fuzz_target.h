// The cache manager's request handling as a fuzz target: an input is a script of calls (OpenSession,
// SubmitStep, ScoreBatches of many sessions' steps, ring slots, GetSession, CloseSession,
// SetSessionPolicy, ListSessions) with fuzzed fields, run in-process against CacheManagerService and
// PolicyAdminService on a CPU store. Built with libFuzzer by scripts/fuzz.sh and replayed over the kept
// corpus by service_corpus_test.
#ifndef A2SF_CACHEMGR_SERVICE_FUZZ_SERVICE_FUZZ_TARGET_H_
#define A2SF_CACHEMGR_SERVICE_FUZZ_SERVICE_FUZZ_TARGET_H_

#include <cstddef>
#include <cstdint>

namespace a2sf::cachemgr {

struct FuzzRunCounts {
  int calls = 0;
  int ok = 0;
  int refused = 0;  // each with a non-empty message and a code other than UNKNOWN/INTERNAL
  int batch_steps_decided = 0;  // steps of ScoreBatches answered with a decision
};

// Runs the script in `data`. Aborts (a fuzz finding) when a call, or one step of a batch, fails with
// UNKNOWN or INTERNAL or without a message; when a batch is answered with other than one decision per
// step, decides two token steps of one session, or counts a session as served whose secret no step
// presented; or when the store's accounting disagrees with the open sessions at the end.
FuzzRunCounts RunServiceFuzzInput(const uint8_t* data, size_t size);

}  // namespace a2sf::cachemgr

#endif  // A2SF_CACHEMGR_SERVICE_FUZZ_SERVICE_FUZZ_TARGET_H_
