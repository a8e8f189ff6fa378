// Fuzzing the worker's Generate request handling: an input is a serialized GenerateRequest, run
// in-process through GenerationService over gRPC's in-process transport (no sockets) against a tiny
// synthetic model with the fixture tokenizer, with its policy either in-process or in a cache manager
// served in the same process (the input's first byte chooses). Also exercised with the request's
// job id: GetJob and CancelJob without the job's token (must be NOT_FOUND) and ListJobs.
// Invariants checked (a violation aborts, which libFuzzer reports): no crash or sanitizer finding; every
// refusal has a message and one of the codes generation.proto documents; no job is left running.
// Built with libFuzzer by scripts/fuzz.sh; the kept corpus is replayed by generate_corpus_test.
#ifndef A2SF_WORKER_SERVICE_FUZZ_GENERATE_FUZZ_TARGET_H_
#define A2SF_WORKER_SERVICE_FUZZ_GENERATE_FUZZ_TARGET_H_

#include <cstddef>
#include <cstdint>

#include "absl/status/status.h"

namespace a2sf::worker {

// Runs one input; returns the Generate call's status (OK when the job ran to its end).
// REQUIRES: $A2SF_FIXTURES names the fixtures folder (for the tokenizer).
absl::Status GenerateFuzzInput(const uint8_t* data, size_t size);

}  // namespace a2sf::worker

#endif  // A2SF_WORKER_SERVICE_FUZZ_GENERATE_FUZZ_TARGET_H_
