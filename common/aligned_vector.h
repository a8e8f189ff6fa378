// std::vector storage aligned to a cache line (64 bytes), for buffers that SIMD kernels read in
// 64-byte registers: an unaligned 64-byte load crosses two cache lines, and vector kernels over
// activations pay for it on every load (malloc aligns to 16).
//
// Thread-safety: as std::vector.
#ifndef A2SF_COMMON_ALIGNED_VECTOR_H_
#define A2SF_COMMON_ALIGNED_VECTOR_H_

#include <cstddef>
#include <new>
#include <vector>

namespace a2sf {

template <class T>
struct CacheLineAllocator {
  using value_type = T;
  static constexpr std::align_val_t kAlignment{64};

  CacheLineAllocator() = default;
  template <class U>
  CacheLineAllocator(const CacheLineAllocator<U>&) {}  // NOLINT: allocators convert implicitly

  T* allocate(size_t n) { return static_cast<T*>(::operator new(n * sizeof(T), kAlignment)); }
  void deallocate(T* p, size_t) { ::operator delete(p, kAlignment); }

  template <class U>
  bool operator==(const CacheLineAllocator<U>&) const { return true; }
  template <class U>
  bool operator!=(const CacheLineAllocator<U>&) const { return false; }
};

template <class T>
using AlignedVector = std::vector<T, CacheLineAllocator<T>>;

}  // namespace a2sf

#endif  // A2SF_COMMON_ALIGNED_VECTOR_H_
