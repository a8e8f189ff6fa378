#include "common/kv/score_dtype.h"

#include <cstring>

#include "common/float16.h"

namespace a2sf::kv {

void EncodeScores(const float* in, size_t n, ScoreDType dtype, void* out) {
  switch (dtype) {
    case ScoreDType::kFp32:
      std::memcpy(out, in, n * sizeof(float));
      return;
    case ScoreDType::kFp16:
      FloatsToHalves(in, static_cast<uint16_t*>(out), n);
      return;
    case ScoreDType::kBf16:
      for (size_t i = 0; i < n; ++i) static_cast<uint16_t*>(out)[i] = FloatToBfloat16(in[i]);
      return;
  }
}

}  // namespace a2sf::kv
