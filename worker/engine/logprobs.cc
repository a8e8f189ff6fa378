#include "worker/engine/logprobs.h"

#include <algorithm>
#include <cmath>

namespace a2sf::worker {

LogprobReport ReportLogprobs(absl::Span<const float> logits, int token, int top_n) {
  const int n = int(logits.size());
  // log_softmax(x)_i = x_i - max - log(sum_j exp(x_j - max)), summed in double.
  const float max = *std::max_element(logits.begin(), logits.end());
  double sum = 0;
  for (float x : logits) sum += std::exp(double(x) - max);
  const double log_normalizer = double(max) + std::log(sum);
  auto logprob = [&](int id) { return float(double(logits[id]) - log_normalizer); };
  auto more_likely = [&](int a, int b) { return logits[a] > logits[b] || (logits[a] == logits[b] && a < b); };

  LogprobReport report;
  report.token = {token, logprob(token)};
  for (int i = 0; i < n; ++i) report.rank += more_likely(i, token) ? 1 : 0;
  const int k = std::min(top_n, n);
  if (k > 0) {
    std::vector<int> ids(n);
    for (int i = 0; i < n; ++i) ids[i] = i;
    std::partial_sort(ids.begin(), ids.begin() + k, ids.end(), more_likely);
    for (int i = 0; i < k; ++i) report.top.push_back({ids[i], logprob(ids[i])});
  }
  return report;
}

}  // namespace a2sf::worker
