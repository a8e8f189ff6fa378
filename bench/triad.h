// The benchmarks' memory-bandwidth baseline: a STREAM-style triad (a = b + 3c over three 128 MiB
// float arrays, best of 5), measured in the same process as the figures set against it; and the
// clocks and quantile the benchmarks measure with.
// Thread-safety: none needed (benchmark code, one caller).
#ifndef A2SF_BENCH_TRIAD_H_
#define A2SF_BENCH_TRIAD_H_

#include <vector>

namespace a2sf::bench {

struct TriadGbps {
  double wall;        // bytes moved / wall-clock seconds
  double per_cpu_s;   // bytes moved / CPU seconds of the process (steadier on a shared machine)
};

// Triad bandwidth in GB/s with `threads` threads.
TriadGbps Triad(int threads);

// Wall-clock and process CPU time in seconds.
double WallSeconds();
double CpuSeconds();

// The q-quantile (0..1, nearest rank) of `values`; 0 when there are none. Percentile(v, 0.5): the median.
double Percentile(std::vector<double> values, double q);

}  // namespace a2sf::bench

#endif  // A2SF_BENCH_TRIAD_H_
