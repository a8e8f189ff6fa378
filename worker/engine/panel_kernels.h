// Matrix x vectors for matrices held in panels (weights.h: 16 rows per panel): MatMul's kernels for
// that layout (matmul.cc picks them by the matrix's layout).
//
// Float types: each (row, vector) result is one fp32 accumulator, lane r % 16 of its panel, that
// takes w[r][c] * x[c] by a fused multiply-add for c = 0, 1, ..., cols - 1 in order (llama2.c's
// column order, with the products fused). Every kernel -- scalar (std::fma), AVX2 (two 8-lane
// halves of a panel) and AVX-512 (one 16-lane register) -- does exactly that in every lane, so
// results agree bit for bit across ISAs, tiles, vector counts and threads: batch invariance.
//
// q8_0: the row kernels' arithmetic exactly (matmul.h: exact integer pair sums, one scale FMA per
// block into 8 lanes, the lanes reduced in a fixed order), so q8_0 gives the same bits in panels as
// in rows; the AVX-512 kernel computes it for 16 rows at once from a column pair's one load, AVX2
// for 8.
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

// The panel kernel of `isa` (REQUIRES CpuSupports(isa)) for `type` (REQUIRES PanelsHold(type)), or
// null where there is none (q8_0 on the scalar ISA; matmul.cc then runs the scalar row kernel over
// unpacked panels). Its rows: REQUIRES w.panels(), begin a multiple of kPanelRows, end a multiple of
// it or w.rows (MatMuls' chunks are whole panels).
RowsKernel PanelKernelFor(KernelIsa isa, WeightType type);

}  // namespace a2sf::worker

#endif  // A2SF_WORKER_ENGINE_PANEL_KERNELS_H_
