// Matrix x vectors for every weight type: the engine's one kernel for weights (projections, FFN,
// classifier), behind this narrow interface so the forward pass stays a page of plain math.
//
// out[v][r] = sum_c W[r][c] * x[v][c] for v < n_vectors (x is [n_vectors][cols], out is
// [n_vectors][rows], both contiguous); the same code serves one vector (decoding) and several
// (prefill, batching). Kernels per type: AVX-512 ones and AVX2/FMA/F16C ones, chosen at run time
// by CPUID, and a portable scalar one of each (the reference the tests compare against; the fallback
// on CPUs without AVX2). The AVX-512 kernels give the AVX2 kernels' bits (wider registers, more of
// them for larger tiles of rows x vectors, the same operations in every lane), so a result does not
// depend on which of the two a machine has.
//
// Batch invariance: each (row, vector) result is computed by the same arithmetic in the same order
// whatever n_vectors is, whichever rows a thread gets and however many threads there are, so a row's
// result is bit for bit the same for 1 vector or N. Weights are used as they are held (no fp32 copy).
// Float types (f32, f16, bf16) are expanded to fp32 in registers and multiplied with the fp32
// vectors. A matrix in panels (weights.h; how the CPU engine loads them) runs panel_kernels.h's
// kernels: one chain of fused multiply-adds per (row, vector), in column order for the float types
// and in block order of exact integer block sums for q8_0 and q4_0. A row-major matrix runs the row
// kernels: lane sums per (row, vector), reduced in a fixed order. For q8_0 and q4_0 each vector is
// quantized once per product to 16-bit blocks (BlockQ16: llama.cpp quantizes it to 8 bits, which
// took q8_0's top-1 agreement on the fixture model below its 0.99 target, docs/EVALUATION.md; 16 bits
// cost the same instructions per block) and each pair of blocks is an exact integer dot product
// scaled by the two block scales and accumulated in fp32: the scalar and SIMD kernels of these types
// agree bit for bit.
//
// Thread-safety: no shared state (the quantized vectors go to a scratch buffer of the calling
// thread); concurrent calls are safe (the pool serializes its own use).
#ifndef A2SF_WORKER_ENGINE_MATMUL_H_
#define A2SF_WORKER_ENGINE_MATMUL_H_

#include <cstdint>

#include "absl/types/span.h"
#include "common/thread_pool.h"
#include "worker/model/weights.h"

namespace a2sf::worker {

enum class KernelIsa { kScalar, kAvx2, kAvx512 };

// The best kernels this CPU runs (CPUID): kAvx512 with AVX-512 F/VL/BW, kAvx2 with AVX2, FMA and
// F16C, else kScalar. The environment variable A2SF_MAX_KERNEL_ISA=scalar|avx2|avx512 caps it (read
// once; for benchmarks and debugging; an unknown value is ignored with a warning on stderr).
KernelIsa DetectedIsa();
// Whether this CPU runs the kernels of `isa` (whatever the cap).
bool CpuSupports(KernelIsa isa);
const char* KernelIsaName(KernelIsa isa);

// out[v * w.rows + r] for all rows, with the detected kernels; rows split over `pool` (may be null)
// when the product is large enough to pay for a fork-join: one chunk of rows per thread, and (in
// panels) a thread that finishes early takes the last panels of a chunk still running (PanelClaims;
// one helper per chunk, so beyond two threads a slow chunk is still shared by two at most).
void MatMul(float* out, const WeightMatrix& w, const float* x, int n_vectors, ThreadPool* pool);

// Several products of the same n_vectors vectors (q, k and v of one input; w1 and w3): each as MatMul
// computes it, with the rows of all of them in one fork-join (one wait for the slowest thread instead
// of one per product).
struct Product {
  float* out;
  const WeightMatrix* w;
  const float* x;
};
void MatMuls(absl::Span<const Product> products, int n_vectors, ThreadPool* pool);

// A vector block as the quantized kernels take it: 32 values as d * qs[j], d = max|x| / 32767,
// qs = x / d rounded half away from zero.
struct BlockQ16 {
  float d;
  int16_t qs[kQuantBlock];
};
inline constexpr float kQ16Max = 32767.0f;

// out[0 .. n / 32) = x[0..n) as BlockQ16 (n % 32 == 0), with the kernels of `isa` (the SIMD
// quantizer gives the scalar one's bytes). For tests.
void QuantizeQ16(KernelIsa isa, const float* x, int64_t n, BlockQ16* out);

// Rows [row_begin, row_end) only, with the kernels of `isa` (REQUIRES CpuSupports(isa)); a matrix in
// panels needs whole panels (row_begin a multiple of kPanelRows, row_end too or w.rows), else the
// process aborts with a message. For tests and benchmarks.
void MatMulRows(KernelIsa isa, float* out, const WeightMatrix& w, const float* x, int n_vectors, int64_t row_begin,
                int64_t row_end);

}  // namespace a2sf::worker

#endif  // A2SF_WORKER_ENGINE_MATMUL_H_
