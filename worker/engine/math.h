// The transformer's numeric kernels other than the weight products (worker/engine/matmul.h), kept apart from the model math (engine.cc) so the forward pass
// reads like llama2.c. AVX2/FMA versions are chosen at run time; the portable ones are the fallback.
#ifndef A2SF_WORKER_ENGINE_MATH_H_
#define A2SF_WORKER_ENGINE_MATH_H_

#include <cstddef>

#include "worker/model/weights.h"

namespace a2sf::worker {

// out = x * weight / sqrt(mean(x^2) + eps)
void RmsNorm(float* out, const float* x, const float* weight, int n, float eps);
void Softmax(float* x, int n);
// SwiGLU's gate: gate[i] = silu(gate[i]) * up[i], silu(x) = x / (1 + e^-x).
void SwiGlu(float* gate, const float* up, size_t n);
// cos and sin of position * theta^(-2i/head_dim) for i in [0, head_dim/2): computed once per token
// and shared by every layer.
void RopeTable(int head_dim, int position, float theta, float* cos_out, float* sin_out);
// Rotates pairs (2i, 2i+1) of each head by the table's angles.
void ApplyRope(float* vec, int dim, int head_dim, const float* cos_table, const float* sin_table);
// A head's cached keys or values as KvCacheSlots holds them: n rows of head_dim elements of `type`:
// WeightType::kF16 (2 bytes each), kQ8_0 (a row is Q8_0Bytes(head_dim) bytes of q8_0 blocks), or
// else fp32. An fp16 element is converted exactly to fp32, a q8_0 one to its block's scale x its
// int8, before the same arithmetic as an fp32 one.
struct KvRows {
  const void* data;
  WeightType type;
};
// scores[t] = dot(q, keys[t]) * scale for the n rows of keys.
void AttentionScores(float* scores, const float* q, KvRows keys, int n, int head_dim, float scale);
// out[i] = sum_t weights[t] * values[t][i] for the n rows of values.
void WeightedSum(float* out, const float* weights, KvRows values, int n, int head_dim);
// out += a * x
void Axpy(float* out, float a, const float* x, int n);

}  // namespace a2sf::worker

#endif  // A2SF_WORKER_ENGINE_MATH_H_
