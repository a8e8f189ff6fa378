// JobPlan: a Generation request validated and turned into what the engine runs -- prompt ids,
// generation and sampling options (an unset seed drawn at random here), stop strings, logprobs and
// the resolved budget. The worker service and the in-process a2sf-generate share it, so both accept
// and refuse exactly the same requests. Pure function; thread-safe.
#ifndef A2SF_WORKER_SERVICE_JOB_PLAN_H_
#define A2SF_WORKER_SERVICE_JOB_PLAN_H_

#include <vector>

#include "a2sf/v1/generation.pb.h"
#include "absl/status/statusor.h"
#include "worker/engine/generator.h"
#include "worker/model/model.h"
#include "worker/service/job_output.h"
#include "worker/tokenizer/output_text.h"
#include "worker/tokenizer/tokenizer.h"

namespace a2sf::worker {

struct JobPlan {
  std::vector<int> prompt;
  GenerateOptions generate;  // max_new_tokens 0: until the context is full
  StopStringOptions stop;
  LogprobsRequest logprobs;
  v1::Budget budget;  // resolved: never unset, a ratio with its reference length
};

// INVALID_ARGUMENT naming the field for anything the request gets wrong; FAILED_PRECONDITION for
// text (prompt or stop strings) when `tokenizer` is null.
absl::StatusOr<JobPlan> PlanJob(const v1::GenerateRequest& request, const ModelConfig& model,
                                const Tokenizer* tokenizer);

}  // namespace a2sf::worker

#endif  // A2SF_WORKER_SERVICE_JOB_PLAN_H_
