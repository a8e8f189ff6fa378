#include "common/float16.h"

#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "gtest/gtest.h"

namespace a2sf {
namespace {

TEST(Float16, EveryHalfRoundTripsThroughFloat) {
  for (uint32_t h = 0; h < 65536; ++h) {
    const float f = HalfToFloat(uint16_t(h));
    if (std::isnan(f)) {
      EXPECT_TRUE(std::isnan(HalfToFloat(FloatToHalf(f)))) << h;
      continue;
    }
    EXPECT_EQ(FloatToHalf(f), uint16_t(h)) << h;
  }
}

TEST(Float16, KnownValuesAndRounding) {
  EXPECT_EQ(HalfToFloat(0x3C00), 1.0f);
  EXPECT_EQ(HalfToFloat(0x0001), std::ldexp(1.0f, -24));  // smallest subnormal
  EXPECT_EQ(HalfToFloat(0x7BFF), 65504.0f);               // largest finite
  EXPECT_TRUE(std::isinf(HalfToFloat(0x7C00)));
  EXPECT_EQ(FloatToHalf(1e6f), 0x7C00);  // overflow to infinity
  // 1 + 2^-11 is halfway between 1 and the next half: ties to even (1.0).
  EXPECT_EQ(FloatToHalf(1.0f + std::ldexp(1.0f, -11)), 0x3C00);
  // 1 + 3 * 2^-11 is halfway between two halves, the even one is above.
  EXPECT_EQ(FloatToHalf(1.0f + 3 * std::ldexp(1.0f, -11)), 0x3C02);
  EXPECT_EQ(Bfloat16ToFloat(0x3F80), 1.0f);
  EXPECT_EQ(Bfloat16ToFloat(0xC000), -2.0f);
}

// The bulk encoder (F16C where available) must round exactly as the scalar one: every half value and
// the midpoints and near-midpoints between neighbours, across the whole range, plus odd lengths for
// the scalar tail.
TEST(Float16, BulkEncodingEqualsScalarEncoding) {
  std::vector<float> values;
  for (uint32_t h = 0; h < 0x10000; ++h) {
    if ((h & 0x7c00) == 0x7c00) continue;  // Inf and NaN: below
    const float f = HalfToFloat(uint16_t(h));
    const float next = HalfToFloat(uint16_t(h + 1 == 0x7c00 ? h : h + 1));
    values.push_back(f);
    const float mid = f + (next - f) / 2;
    values.push_back(mid);
    values.push_back(std::nextafter(mid, 1e30f));
    values.push_back(std::nextafter(mid, -1e30f));
  }
  values.push_back(std::numeric_limits<float>::infinity());
  values.push_back(-std::numeric_limits<float>::infinity());
  values.push_back(1e10f);    // overflows to infinity
  values.push_back(1e-12f);   // underflows to zero
  values.push_back(0.1234f);  // a tail value (the count is not a multiple of 8)
  std::vector<uint16_t> bulk(values.size());
  FloatsToHalves(values.data(), bulk.data(), values.size());
  size_t mismatches = 0;
  for (size_t i = 0; i < values.size(); ++i) mismatches += bulk[i] != FloatToHalf(values[i]);
  EXPECT_EQ(mismatches, 0u);
  const std::vector<float> nans(8, std::nanf(""));  // eight: the vector path
  std::vector<uint16_t> out(8);
  FloatsToHalves(nans.data(), out.data(), nans.size());
  for (uint16_t h : out) EXPECT_TRUE(std::isnan(HalfToFloat(h)));
}

}  // namespace
}  // namespace a2sf
