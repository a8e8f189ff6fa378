#include "bench/triad.h"

#include <algorithm>
#include <chrono>
#include <ctime>
#include <vector>

#include "common/thread_pool.h"

namespace a2sf::bench {

double WallSeconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

double Percentile(std::vector<double> values, double q) {
  if (values.empty()) return 0;
  std::sort(values.begin(), values.end());
  return values[std::min(values.size() - 1, size_t(q * double(values.size() - 1) + 0.5))];
}

double CpuSeconds() {
  timespec t;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
  return double(t.tv_sec) + 1e-9 * double(t.tv_nsec);
}

TriadGbps Triad(int threads) {
  const size_t n = size_t(1) << 25;  // 3 arrays x 128 MiB
  std::vector<float> a(n, 1.0f), b(n, 2.0f), c(n, 0.5f);
  ThreadPool pool(threads);
  const size_t chunks = size_t(threads) * 8, chunk = n / chunks;
  TriadGbps best{0, 0};
  for (int rep = 0; rep < 5; ++rep) {
    const double wall = WallSeconds(), cpu = CpuSeconds();
    pool.ParallelFor(chunks, [&](size_t k) {
      float* __restrict pa = a.data() + k * chunk;
      const float* __restrict pb = b.data() + k * chunk;
      const float* __restrict pc = c.data() + k * chunk;
      for (size_t i = 0; i < chunk; ++i) pa[i] = pb[i] + 3.0f * pc[i];
    });
    const double bytes = 3.0 * 4 * double(n);
    best.wall = std::max(best.wall, bytes / (WallSeconds() - wall) / 1e9);
    best.per_cpu_s = std::max(best.per_cpu_s, bytes / (CpuSeconds() - cpu) / 1e9);
  }
  return best;
}

}  // namespace a2sf::bench
