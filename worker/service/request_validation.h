// Checks on a GenerateRequest that need neither the model nor the policy library: what the wire
// format lets through but the API's contract (generation.proto) rules out. Each failure is
// INVALID_ARGUMENT naming the field. The model-dependent checks (prompt length, token ids, context)
// stay with GenerationService::PromptIds; sampling values with ValidateSampling.
// Thread-safety: pure functions.
#ifndef A2SF_WORKER_SERVICE_REQUEST_VALIDATION_H_
#define A2SF_WORKER_SERVICE_REQUEST_VALIDATION_H_

#include <string>

#include "a2sf/v1/generation.pb.h"
#include "absl/status/status.h"
#include "google/protobuf/message.h"

namespace a2sf::worker {

// Every enum field, at any depth, holds a value its enum declares. proto3 enums are open: a client
// can send prefill = 99 and the field keeps 99, which would otherwise be read as some default.
absl::Status CheckEnumValuesKnown(const google::protobuf::Message& message, const std::string& prefix = "");

// The contract checks above plus: a text prompt is not empty (generation.proto: INVALID_ARGUMENT
// for an empty prompt; BOS alone is not a prompt).
absl::Status ValidateGenerateRequest(const v1::GenerateRequest& request);

}  // namespace a2sf::worker

#endif  // A2SF_WORKER_SERVICE_REQUEST_VALIDATION_H_
