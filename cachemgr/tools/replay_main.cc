// a2sf-replay: prints the eviction decisions a policy makes on a score trace (see trace_replay.h).
//   a2sf-replay --trace=trace.jsonl [--policy='{"name":"h2o"}'] [--json]
#include <fstream>
#include <iostream>

#include "common/cli.h"
#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "cachemgr/tools/trace_replay.h"

ABSL_FLAG(std::string, trace, "-", "score trace (JSON lines); '-' reads standard input");
ABSL_FLAG(std::string, policy, "", "policy as JSON, overriding the trace header's, e.g. {\"name\":\"h2o\"}");
ABSL_FLAG(bool, json, false, "print one JSON object per step");

int main(int argc, char** argv) {
  a2sf::ParseCommandLine(argc, argv,
                         {"a2sf-replay", "replays a score trace through an eviction policy and prints each decision.",
                          {}});
  a2sf::cachemgr::ReplayOptions options;
  options.json = absl::GetFlag(FLAGS_json);
  if (!absl::GetFlag(FLAGS_policy).empty()) {
    absl::StatusOr<a2sf::cachemgr::PolicySpec> spec = a2sf::cachemgr::ParsePolicyJson(absl::GetFlag(FLAGS_policy));
    if (!spec.ok()) {
      std::cerr << "a2sf-replay: --policy: " << spec.status().message() << "\n";
      return 2;
    }
    options.policy_override = *spec;
  }
  const std::string path = absl::GetFlag(FLAGS_trace);
  std::ifstream file;
  if (path != "-") {
    file.open(path);
    if (!file) {
      std::cerr << "a2sf-replay: cannot open trace '" << path << "'\n";
      return 2;
    }
  }
  std::istream& in = path == "-" ? std::cin : file;
  absl::StatusOr<a2sf::cachemgr::ReplaySummary> summary = a2sf::cachemgr::ReplayTrace(in, std::cout, options);
  if (!summary.ok()) {
    std::cerr << "a2sf-replay: " << summary.status().message() << "\n";
    return 1;
  }
  if (!options.json) std::cout << summary->steps << " steps, " << summary->evictions << " evictions\n";
  return 0;
}
