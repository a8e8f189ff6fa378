// PanelClaims: how the panels of one chunk of a matrix's rows are shared out between threads
// (matmul.cc's MatMuls, panel_walk.inc). Internal to the engine's kernels; its own target so that it
// is tested on its own.
#ifndef A2SF_WORKER_ENGINE_PANEL_CLAIMS_H_
#define A2SF_WORKER_ENGINE_PANEL_CLAIMS_H_

#include <algorithm>
#include <atomic>
#include <cstdint>

namespace a2sf::worker {

// The panels of one chunk of a panel matrix's rows, shared between the thread the chunk is for, which
// takes them from the front, and threads left without work, which take them from the back. The first
// keeps its walk's few long sequential streams (panel_walk.inc: cutting a chunk shortens them, and
// that costs), and a thread that finishes early does not wait idle for one that started late or runs
// slower (a busy core, a noisy neighbour). Panels are numbered in the walk's order, 0..count-1: [0, grouped)
// in groups of `group` (a tile's panels; grouped a multiple of group), then one at a time. The owner
// takes one piece (a group, or one panel) at a time, so that a helper can always come in; a helper
// takes half of what is left in whole pieces -- of the single panels while any are left, then of
// the groups -- so the two meet on the claim's cache line a few times
// per chunk, not once per tile (helpers that took one tile at a time ran q4_0, whose tiles are
// smallest, 2-15% slower than before sharing).
// Thread-safety: Take may be called from any threads at once; each panel is taken exactly once.
class alignas(64) PanelClaims {  // a cache line of its own: two owners never share one
 public:
  explicit PanelClaims(uint32_t count = 0) { Reset(count); }
  PanelClaims(const PanelClaims&) = delete;
  PanelClaims& operator=(const PanelClaims&) = delete;

  // All `count` panels unclaimed again. Not concurrent with Take.
  void Reset(uint32_t count) { word_.store(uint64_t(count) << 32, std::memory_order_relaxed); }

  // Panels [*first, *first + *n) for this thread: from the front, the next piece (`group` panels inside
  // [0, grouped), one after it); from the back, the last half of the pieces left, rounded up. False
  // when no panel is left.
  bool Take(bool from_back, uint32_t grouped, uint32_t group, uint32_t* first, uint32_t* n) {
    uint64_t word = word_.load(std::memory_order_relaxed);
    for (;;) {
      const uint32_t front = uint32_t(word), back = uint32_t(word >> 32);
      if (front >= back) return false;
      uint64_t next;
      if (from_back) {
        const uint32_t low = std::max(front, grouped);
        *n = back > low ? (back - low + 1) / 2 : group * (((back - front) / group + 1) / 2);
        *first = back - *n;
        next = (uint64_t(*first) << 32) | front;
      } else {
        *n = front < grouped ? group : 1;
        *first = front;
        next = (uint64_t(back) << 32) | (front + *n);
      }
      // Which thread runs a panel is all this decides; ParallelFor's join orders the results.
      if (word_.compare_exchange_weak(word, next, std::memory_order_relaxed)) return true;
    }
  }

 private:
  std::atomic<uint64_t> word_;  // unclaimed panels [front, back): front in the low 32 bits, back in the high
};

}  // namespace a2sf::worker

#endif  // A2SF_WORKER_ENGINE_PANEL_CLAIMS_H_
