// IEEE binary16 and bfloat16 conversions, shared by the score stores, the weight loaders and
// the worker's score encoder.
#ifndef A2SF_COMMON_FLOAT16_H_
#define A2SF_COMMON_FLOAT16_H_

#include <cstddef>
#include <cstdint>

namespace a2sf {

// Exact (every binary16 value, subnormals, infinities and NaN, is a float).
float HalfToFloat(uint16_t half);
// Round to nearest even; overflow gives infinity, NaN stays NaN.
uint16_t FloatToHalf(float value);
// Exact: bfloat16 is the upper half of a binary32.
float Bfloat16ToFloat(uint16_t bf16);
// Round to nearest even (as ggml's fp32 -> bf16); NaN stays a (quiet) NaN.
uint16_t FloatToBfloat16(float value);

// True when the CPU and OS run AVX with F16C conversions. cpuid, not __builtin_cpu_supports("f16c"):
// clang 14 (the fuzz builds) does not know that feature name.
bool CpuHasAvxF16c();

// FloatToHalf over an array: F16C eight at a time where the CPU has it (the same rounding; a NaN
// may keep more of its payload), the scalar loop otherwise. The worker's per-step score encoder.
void FloatsToHalves(const float* in, uint16_t* out, size_t n);

}  // namespace a2sf

#endif  // A2SF_COMMON_FLOAT16_H_
