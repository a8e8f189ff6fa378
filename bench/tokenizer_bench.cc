// Prompt tokenization time: VocabularyTokenizer (merges through a heap, O(n log n)) against the plain
// merge loop (testing::ReferenceEncode, O(n^2): what the tokenizer did before) in the same run, on the
// fixture tokenizer (tok512) and prompts cut from the fixture corpus, 1 to 32 KB (32 KB: the most the
// worker takes for stories260K's 512-token context). Both must give the same ids; best of 3 runs.
//   A2SF_FIXTURES=../shared/fixtures bazel run -c opt //bench:tokenizer_bench
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

#include "absl/time/clock.h"
#include "nlohmann/json.hpp"
#include "worker/tokenizer/testing/reference_bpe.h"
#include "worker/tokenizer/tokenizer.h"
#include "worker/tokenizer/vocabulary.h"

namespace {

// Best wall time of `runs` calls of fn, in ms.
template <typename Fn>
double BestMs(int runs, Fn fn) {
  double best = 1e300;
  for (int r = 0; r < runs; ++r) {
    const absl::Time start = absl::Now();
    fn();
    best = std::min(best, absl::ToDoubleMilliseconds(absl::Now() - start));
  }
  return best;
}

}  // namespace

int main() {
  const char* fixtures = std::getenv("A2SF_FIXTURES");
  if (fixtures == nullptr) {
    std::printf("tokenizer_bench: set A2SF_FIXTURES to the fixtures folder (tok512.bin, the corpus)\n");
    return 0;
  }
  const std::string dir = fixtures;
  auto vocabulary = a2sf::worker::ReadVocabulary(dir + "/tok512.bin", 512);
  auto tokenizer = a2sf::worker::LoadTokenizer(dir + "/tok512.bin");
  if (!vocabulary.ok() || !tokenizer.ok()) {
    std::printf("tokenizer_bench: cannot read tok512.bin\n");
    return 1;
  }
  std::string stories;
  std::ifstream corpus(dir + "/corpus_t1_p09_seeds1-20.jsonl");
  for (std::string line; std::getline(corpus, line);) stories += nlohmann::json::parse(line)["text"].get<std::string>() + "\n";
  if (stories.empty()) {
    std::printf("tokenizer_bench: the corpus is empty\n");
    return 1;
  }
  while (stories.size() < (size_t(32) << 10)) stories += stories;
  std::printf("prompt tokenization, tok512, corpus text, best of 3 (ms):\n");
  std::printf("%8s %8s %10s %12s %10s\n", "KB", "ids", "heap", "plain loop", "ratio");
  for (size_t kb : {1, 4, 16, 32}) {
    const std::string text = stories.substr(0, kb << 10);
    std::vector<int> heap_ids, loop_ids;
    const double heap = BestMs(3, [&] { heap_ids = *(*tokenizer)->Encode(text, false); });
    const double loop = BestMs(kb <= 4 ? 3 : 1, [&] { loop_ids = a2sf::worker::testing::ReferenceEncode(*vocabulary, text); });
    if (heap_ids != loop_ids) {
      std::printf("tokenizer_bench: the two disagree at %zu KB\n", kb);
      return 1;
    }
    std::printf("%8zu %8zu %10.3f %12.3f %9.0fx\n", kb, heap_ids.size(), heap, loop, loop / heap);
  }
  return 0;
}
