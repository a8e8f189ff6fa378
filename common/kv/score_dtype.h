// ScoreDType: the element type of a packed score tensor, the one enum every component uses for it --
// the worker's encoder, both transports (a2sf.v1.ScoreDType on gRPC, its wire value in a ring slot),
// the score stores and the CUDA kernels. Values are little-endian. Plain constexpr C++ with no
// dependencies, so .cu files include it too. The wire values are converted in exactly one place
// (common/kv/proto_convert.h); nothing else compares against a2sf.v1 enum numbers.
#ifndef A2SF_COMMON_KV_SCORE_DTYPE_H_
#define A2SF_COMMON_KV_SCORE_DTYPE_H_

#include <cstddef>
#include <cstdint>

namespace a2sf::kv {

enum class ScoreDType : uint8_t {
  kFp32 = 0,  // IEEE binary32, 4 bytes
  kFp16 = 1,  // IEEE binary16, 2 bytes (the workers' default)
  kBf16 = 2,  // bfloat16 (upper half of a binary32), 2 bytes
};

constexpr size_t ScoreDTypeBytes(ScoreDType dtype) { return dtype == ScoreDType::kFp32 ? 4 : 2; }

constexpr const char* ScoreDTypeName(ScoreDType dtype) {
  return dtype == ScoreDType::kFp32 ? "fp32" : dtype == ScoreDType::kFp16 ? "fp16" : "bf16";
}

// Packs `n` floats as `dtype` into `out` (n * ScoreDTypeBytes(dtype) bytes): a copy for fp32,
// round-to-nearest-even for fp16 and bf16 (common/float16.h). The worker's one score encoder.
void EncodeScores(const float* in, size_t n, ScoreDType dtype, void* out);

}  // namespace a2sf::kv

#endif  // A2SF_COMMON_KV_SCORE_DTYPE_H_
