// Matrix x vectors for matrices held in panels (weights.h: 16 rows per panel): MatMul's kernels for
// that layout (matmul.cc picks them by the matrix's layout).
//
// Float types: each (row, vector) result is one fp32 accumulator, lane r % 16 of its panel, that
// takes w[r][c] * x[c] by a fused multiply-add for c = 0, 1, ..., cols - 1 in order (llama2.c's
// column order, with the products fused). Every kernel -- scalar (std::fma), AVX2 (two 8-lane
// halves of a panel) and AVX-512 (one 16-lane register) -- does exactly that in every lane, so
// results agree bit for bit across ISAs, tiles, vector counts and threads: batch invariance.
//
// q8_0 and q4_0: the same shape of arithmetic, a block at a time. Each (row, vector) result is one
// fp32 accumulator that takes, for block b = 0, 1, ... in order, fma(d_w * d_x, float(dot), acc): dot
// the exact integer product of the block's 32 weights (q8_0: int8; q4_0: nibble - 8) and the vector
// block's 32 16-bit values (below 2^31 in magnitude, so exact in any order). The scalar kernel, the
// AVX2 one (madd + add, 8 rows at a time) and the AVX-512 one (vpdpwssd, AVX512-VNNI; 16 rows) agree
// bit for bit, and a row's result does not depend on the vectors or rows beside it. (The row
// layout's quantized kernels keep 8 lane sums per row, matmul.h, so the two layouts' results differ
// in the last bits, as the float types' do.) One broadcast of a vector's two 16-bit values serves
// every panel of a tile, one widened load of a column pair every vector; a block's 16 pair products
// for 16 rows take one vpdpwssd each (AVX2: a madd and an add per 8 rows), then one conversion and
// one FMA.
//
// Why panels: one column of a panel is 16 rows' weights in one 64-byte line (f32), so a weight load
// serves every vector of a tile and a vector's value is one broadcast shared by the tile's panels.
// The row-major several-vector tile reloads each vector's slice for every two rows; with eight
// vectors those reloads crowd out the streamed matrix (docs/PERFORMANCE.md, "Panels").
//
// Thread-safety: stateless; concurrent calls are safe.
#ifndef A2SF_WORKER_ENGINE_PANEL_KERNELS_H_
#define A2SF_WORKER_ENGINE_PANEL_KERNELS_H_

#include <cstdint>

#include "worker/engine/matmul.h"
#include "worker/engine/matmul_kernel.h"
#include "worker/model/weights.h"

namespace a2sf::worker {

// The panel kernel of `isa` (REQUIRES CpuSupports(isa)) for `type`; q8_0 and q4_0 on an AVX-512
// CPU without VNNI get the AVX2 kernels (the same bits). Its rows: REQUIRES w.panels(), begin a
// multiple of kPanelRows, end a multiple of it or w.rows (MatMuls' chunks are whole panels); a shared
// chunk's claims count its panels, ceil((end - begin) / kPanelRows), and every call on them passes the
// same rows and n_vectors (which fix the walk's order).
PanelKernel PanelKernelFor(KernelIsa isa, WeightType type);

}  // namespace a2sf::worker

#endif  // A2SF_WORKER_ENGINE_PANEL_KERNELS_H_
