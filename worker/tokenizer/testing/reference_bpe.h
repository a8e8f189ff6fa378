// ReferenceEncode: the tokenizer's merge rule written as plainly as it reads -- llama2.c's loop, every
// pair rescanned per merge, the highest score, the leftmost of equal ones -- for tests to compare
// VocabularyTokenizer's heap against and for tokenizer_bench's same-run baseline. O(n^2) per prompt.
// Thread-safe; no state.
#ifndef A2SF_WORKER_TOKENIZER_TESTING_REFERENCE_BPE_H_
#define A2SF_WORKER_TOKENIZER_TESTING_REFERENCE_BPE_H_

#include <string>
#include <vector>

#include "worker/tokenizer/vocabulary.h"

namespace a2sf::worker::testing {

// `text` encoded with `vocabulary` (no BOS; its space prefix and byte fallback as the tokenizer's).
std::vector<int> ReferenceEncode(const Vocabulary& vocabulary, const std::string& text);

}  // namespace a2sf::worker::testing

#endif  // A2SF_WORKER_TOKENIZER_TESTING_REFERENCE_BPE_H_
