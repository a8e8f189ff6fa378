// What a MatMul kernel takes (internal to the engine's matmul.cc and panel_kernels.cc): the vectors
// in the form the matrix's type needs, and the kernel signature of each layout (row-major matrices:
// RowsKernel; panels: PanelKernel, whose chunk of rows threads can share).
#ifndef A2SF_WORKER_ENGINE_MATMUL_KERNEL_H_
#define A2SF_WORKER_ENGINE_MATMUL_KERNEL_H_

#include <cstddef>
#include <cstdint>

#include "worker/engine/matmul.h"
#include "worker/engine/panel_claims.h"
#include "worker/model/weights.h"

namespace a2sf::worker {

// The vectors as a kernel takes them: fp32 for the float types; for q8_0 and q4_0, each vector
// quantized once per product to 16-bit blocks (BlockQ16), which every row then multiplies with
// exact integer dot products.
struct Activations {
  const float* f32 = nullptr;
  const BlockQ16* q16 = nullptr;
  size_t q16_blocks = 0;  // blocks per vector
};

// out[v * w.rows + r] for rows [begin, end) and v < n_vectors.
using RowsKernel = void (*)(const WeightMatrix& w, const Activations& x, int n_vectors, int64_t begin, int64_t end,
                            float* out);

// Panels in rows [begin, end) of a panel matrix (the last may be partial): what a chunk's claims count.
inline uint32_t PanelsIn(int64_t begin, int64_t end) { return uint32_t((end - begin + kPanelRows - 1) / kPanelRows); }

// Which of a chunk's panels a panel kernel's call runs: the pieces it takes from `claims` (REQUIRED,
// counting PanelsIn(begin, end)), from the front (the chunk's own thread, or the only one) or the back
// (a helper).
struct PanelShare {
  PanelClaims* claims;
  bool from_back = false;
};

// RowsKernel for a matrix in panels, running the part of rows [begin, end) that `share` gives it.
using PanelKernel = void (*)(const WeightMatrix& w, const Activations& x, int n_vectors, int64_t begin, int64_t end,
                             float* out, PanelShare share);

}  // namespace a2sf::worker

#endif  // A2SF_WORKER_ENGINE_MATMUL_KERNEL_H_
