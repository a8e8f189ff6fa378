// The CUDA side of CudaScoreStore: device memory, the fused per-head update-and-argmin kernel, the
// bulk-prefill scoring kernel with a segmented k-smallest (CUB radix sort), and the swap-remove kernel.
// A plain interface (no Abseil, no CUDA types) so that cuda_score_store.cc builds with or without a
// CUDA toolkit; cuda_kernels_stub.cc stands in when there is none. Functions return 0 on success or a
// CUDA error code, with `error` set to its text.
#ifndef A2SF_CACHEMGR_STORE_CUDA_KERNELS_H_
#define A2SF_CACHEMGR_STORE_CUDA_KERNELS_H_

#include <cstddef>
#include <cstdint>
#include <string>

#include "common/kv/score_dtype.h"

namespace a2sf::cachemgr::cuda {

bool Available(std::string* reason);

int Malloc(void** device_pointer, size_t bytes, std::string* error);
void Free(void* device_pointer);
int CopyToDevice(void* dst, const void* src, size_t bytes, std::string* error);
int CopyToHost(void* dst, const void* src, size_t bytes, std::string* error);
// Copies `rows` rows of `row_bytes` between buffers of different strides (capacity growth).
int CopyRows(void* dst, size_t dst_stride, const void* src, size_t src_stride, size_t row_bytes, size_t rows,
             std::string* error);

// One (session, layer, KV head) of a token step. Device pointers.
struct HeadTask {
  const float* a_old;   // current accumulators; slot n-1 is set to 0 by the kernel
  float* a_new;         // receives alpha * a_old + s
  uint32_t* positions;  // slot n-1 receives `position`
  const void* device_input;  // this step's scores in device memory; null: in the uploaded input
  uint64_t input_offset;  // index of this head's first value in device_input, or in the step input
  uint32_t n;           // entries including the new one
  uint32_t position;
  float alpha;
  uint32_t candidate_lo;
  uint32_t candidate_hi;
  uint32_t uses_scores;  // 0: position-keyed rule (no accumulation)
};

struct HeadResult {
  float best_score;
  uint32_t best_position;
  uint32_t best_slot;  // 0xffffffff: no candidate
  uint32_t count_at_or_above_hi;
  uint32_t invalid;
};

// Device scratch (input staging, task and result arrays) reused across calls.
struct Context;
Context* CreateContext();
void DestroyContext(Context* context);

// Uploads `input` (num_values of `dtype`), makes the stream wait for `wait_events` (cudaEvent_t:
// the writers of tasks' device_input), runs one block per task, and downloads the results. Synchronous.
int RunTokenStep(Context* context, const HeadTask* tasks, uint32_t num_tasks, const void* input,
                 size_t input_bytes, kv::ScoreDType dtype, void* const* wait_events, uint32_t num_wait_events,
                 HeadResult* results, std::string* error);

struct EvictTask {
  float* scores;        // device, per slot (may be the same buffer as a_new after the commit)
  uint32_t* positions;  // device
  uint32_t n;           // entries before eviction
  uint32_t k;           // evictions
  uint32_t slot_offset;  // index of this head's first slot in the slot array
};

// Applies swap-removes (slots descending per head) and returns the evicted positions.
int ApplyEvictions(Context* context, const EvictTask* tasks, uint32_t num_tasks, const uint32_t* slots,
                   uint32_t total_slots, uint32_t* evicted_positions, std::string* error);

struct BulkHeadTask {
  float* scores;        // device, receives A for P slots
  uint32_t* positions;  // device, receives first_position + slot
  uint64_t input_offset;  // index of this head's P x P matrix in the input
  float alpha;
};

// Scores a prompt of P entries per head, then chooses per head the k smallest candidates by
// (score, position) (or by position when !uses_scores) with positions < sinks and the `recent` newest
// protected. Writes num_tasks * k victim slots (any order within a head). Synchronous.
int RunBulkPrefill(Context* context, const BulkHeadTask* tasks, uint32_t num_tasks, const void* input,
                   size_t input_bytes, kv::ScoreDType dtype, uint32_t P, uint32_t first_position, uint32_t uses_scores,
                   uint32_t sinks, uint32_t recent, uint32_t k, uint32_t* victim_slots, uint32_t* invalid,
                   std::string* error);

}  // namespace a2sf::cachemgr::cuda

#endif  // A2SF_CACHEMGR_STORE_CUDA_KERNELS_H_
