// Attention's cost per token on one thread, apart from the weight products: for each cached-token
// count and KV type (f32, f16, q8_0: EngineOptions::kv_type), the 110M shape's 12 layers x 12 heads (head
// width 64) of keys and values run through AttentionScores, Softmax and WeightedSum
// (worker/engine/math.h) as a decode step does. In a real
// step the weight stream pushes the keys and values out of the caches between two tokens, so each
// round here reads its own copy of them, from at least 256 MiB of copies taken in turn: every round's
// keys and values come from memory. Reported: KV bytes per token, ms per token (best and median of
// --rounds), KV GB/s at the median and its ratio to the same-run one-thread triad, and the f16 and
// q8_0 rows' speed-up over the f32 rows of the same count (median against median).
//
//   bazel run -c opt //bench:attention_bench
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/numbers.h"
#include "bench/triad.h"
#include "worker/engine/kv_cache.h"
#include "worker/engine/math.h"

ABSL_FLAG(int, rounds, 21, "rounds per cached-token count");
ABSL_FLAG(std::vector<std::string>, tokens, std::vector<std::string>({"64", "256", "512", "1024", "2048"}),
          "cached-token counts");

namespace a2sf::worker {
namespace {

constexpr int kLayers = 12, kHeads = 12, kHeadDim = 64;
constexpr double kCopiesBytes = 256.0 * (1 << 20);

// Keys and values in [-1.9, 1.9], multiples of 1/16: normal numbers (no subnormal slow paths on any
// CPU), exact in fp16; rows of kHeadDim encoded as `type` by its weight encoder (q8_0: blocks of 32).
void Fill(WeightType type, std::vector<uint8_t>* kv) {
  const size_t row_bytes = KvCacheSlots::KeyBytes(type, kHeadDim);
  float row[kHeadDim];
  for (size_t r = 0; r < kv->size() / row_bytes; ++r) {
    for (int c = 0; c < kHeadDim; ++c) row[c] = float(int((r * kHeadDim + c) % 61) - 30) / 16.0f;
    Traits(type).from_float(row, kv->data() + r * row_bytes, kHeadDim);
  }
}

int Run() {
  const int rounds = absl::GetFlag(FLAGS_rounds);
  std::vector<int> counts;
  for (const std::string& text : absl::GetFlag(FLAGS_tokens)) {
    int n = 0;
    if (!absl::SimpleAtoi(text, &n) || n < 1 || n > 16384) {
      std::fprintf(stderr, "--tokens: '%s' is not a count in [1, 16384]\n", text.c_str());
      return 2;
    }
    counts.push_back(n);
  }
  if (rounds < 1) {
    std::fprintf(stderr, "--rounds must be at least 1\n");
    return 2;
  }
  const bench::TriadGbps triad = bench::Triad(1);
  std::printf("attention, 12 layers x 12 heads x 64, 1 thread; triad %.1f GB/s\n", triad.wall);
  std::printf("%8s %5s %12s %10s %10s %10s %10s %10s\n", "tokens", "KV", "KV MB/token", "best ms", "median ms",
              "KV GB/s", "/ triad", "x f32");
  volatile float sink = 0.0f;
  for (const int n : counts) {
    double f32_median = 0.0;
    for (const WeightType type : {WeightType::kF32, WeightType::kF16, WeightType::kQ8_0}) {
      const size_t head_bytes = size_t(n) * KvCacheSlots::KeyBytes(type, kHeadDim);  // a head's keys
      const size_t keys_bytes = size_t(kLayers) * kHeads * head_bytes;               // and as many values
      const double kv_bytes = 2.0 * keys_bytes;
      const size_t copies = size_t(std::max(2.0, kCopiesBytes / kv_bytes + 1.0));
      std::vector<uint8_t> kv(size_t(copies * kv_bytes));
      Fill(type, &kv);
      std::vector<float> q(kHeadDim, 0.1f), att(n), out(kHeadDim);
      std::vector<double> step_ms;
      for (int round = 0; round < rounds; ++round) {
        const uint8_t* keys = kv.data() + size_t((round % copies) * kv_bytes);
        const uint8_t* values = keys + keys_bytes;
        const double start = bench::WallSeconds();
        for (size_t at = 0; at < keys_bytes; at += head_bytes) {  // layer by layer, head by head
          AttentionScores(att.data(), q.data(), KvRows{keys + at, type}, n, kHeadDim, 0.125f);
          Softmax(att.data(), n);
          WeightedSum(out.data(), att.data(), KvRows{values + at, type}, n, kHeadDim);
          sink = sink + out[0];
        }
        step_ms.push_back((bench::WallSeconds() - start) * 1e3);
      }
      const double best = *std::min_element(step_ms.begin(), step_ms.end());
      const double median = bench::Percentile(step_ms, 0.5);
      if (type == WeightType::kF32) f32_median = median;
      const double gbps = kv_bytes / (median * 1e-3) / 1e9;
      std::printf("%8d %5s %12.2f %10.3f %10.3f %10.1f %10.2f %10.2f\n", n, WeightTypeName(type), kv_bytes / 1e6, best,
                  median, gbps, gbps / triad.wall, f32_median / median);
    }
  }
  return 0;
}

}  // namespace
}  // namespace a2sf::worker

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  return a2sf::worker::Run();
}
