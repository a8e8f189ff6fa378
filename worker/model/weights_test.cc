#include "worker/model/weights.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "common/float16.h"
#include "gtest/gtest.h"

namespace a2sf::worker {
namespace {

std::vector<float> Ramp() {  // x_j = j - 16: largest magnitude 16 at j = 0, negative
  std::vector<float> x(32);
  for (int j = 0; j < 32; ++j) x[j] = float(j - 16);
  return x;
}

TEST(WeightTypes, TableRowsMatchGgufIdsAndSizes) {
  EXPECT_EQ(Traits(WeightType::kQ8_0).gguf_type, 8u);
  EXPECT_EQ(Traits(WeightType::kQ4_0).gguf_type, 2u);
  EXPECT_EQ(Traits(WeightType::kBF16).gguf_type, 30u);
  EXPECT_EQ(RowBytes(WeightType::kQ8_0, 64), 68u);
  EXPECT_EQ(RowBytes(WeightType::kQ4_0, 64), 36u);
  EXPECT_EQ(RowBytes(WeightType::kBF16, 64), 128u);
  EXPECT_EQ(TraitsForGgufType(1)->type, WeightType::kF16);
  EXPECT_EQ(TraitsForGgufType(12), nullptr);  // q4_K: not run by this engine
}

TEST(WeightTypes, Q8_0BlockIsScaleAmaxOver127AndRoundedValues) {
  const std::vector<float> x = Ramp();
  BlockQ8_0 block;
  Traits(WeightType::kQ8_0).from_float(x.data(), &block, 32);
  EXPECT_EQ(block.d, FloatToHalf(16.0f / 127.0f));
  for (int j = 0; j < 32; ++j) EXPECT_EQ(block.qs[j], int(std::lround((j - 16) * 127.0 / 16.0))) << j;
  EXPECT_EQ(block.qs[0], -127);
  std::vector<float> back(32);
  Traits(WeightType::kQ8_0).to_float(&block, back.data(), 32);
  for (int j = 0; j < 32; ++j) EXPECT_FLOAT_EQ(back[j], HalfToFloat(block.d) * block.qs[j]);
}

TEST(WeightTypes, Q4_0UsesSignedMaxOverMinus8AndGgufNibbleOrder) {
  const std::vector<float> x = Ramp();  // signed max -16: d = 2, q_j = trunc(x_j / 2 + 8.5) = (j + 1) / 2
  BlockQ4_0 block;
  Traits(WeightType::kQ4_0).from_float(x.data(), &block, 32);
  EXPECT_EQ(HalfToFloat(block.d), 2.0f);
  auto q = [](int j) { return std::min(15, (j + 1) / 2); };
  for (int j = 0; j < 16; ++j) {
    EXPECT_EQ(block.qs[j] & 0x0f, q(j)) << j;       // low nibble: element j
    EXPECT_EQ(block.qs[j] >> 4, q(j + 16)) << j;    // high nibble: element j + 16
  }
  std::vector<float> back(32);
  Traits(WeightType::kQ4_0).to_float(&block, back.data(), 32);
  EXPECT_EQ(back[0], -16.0f);  // the signed max is exact
  EXPECT_EQ(back[31], 14.0f);  // 15 saturates: (15 - 8) * 2
}

TEST(WeightTypes, AllZeroBlocksQuantizeToZero) {
  std::vector<float> zeros(32, 0.0f), back(32, 1.0f);
  for (WeightType t : {WeightType::kQ8_0, WeightType::kQ4_0}) {
    std::vector<uint8_t> row(RowBytes(t, 32));
    Traits(t).from_float(zeros.data(), row.data(), 32);
    Traits(t).to_float(row.data(), back.data(), 32);
    for (float v : back) EXPECT_EQ(v, 0.0f) << WeightTypeName(t);
  }
}

// Values a converted file may hold that have no integer value: a NaN weight quantizes to 0 and its
// block's other weights as if it were absent; a block of tiny weights (its scale's inverse infinite)
// to zeros; an infinite weight leaves a block without finite values (garbage in) but no undefined
// conversion (the sanitizer builds check that). Both block types.
TEST(WeightTypes, NonFiniteAndTinyWeightsQuantizeWithoutUndefinedConversions) {
  for (WeightType t : {WeightType::kQ8_0, WeightType::kQ4_0}) {
    std::vector<float> x = Ramp(), back(32);
    x[5] = std::nanf("");
    std::vector<uint8_t> row(RowBytes(t, 32)), reference(RowBytes(t, 32));
    Traits(t).from_float(x.data(), row.data(), 32);
    Traits(t).to_float(row.data(), back.data(), 32);
    x[5] = 0.0f;  // what the NaN becomes, with the block's scale from the others
    Traits(t).from_float(x.data(), reference.data(), 32);
    EXPECT_EQ(row, reference) << WeightTypeName(t);
    std::vector<float> tiny(32, 0.0f);
    tiny[0] = 1e-37f, tiny[7] = -3e-38f;
    Traits(t).from_float(tiny.data(), row.data(), 32);
    Traits(t).to_float(row.data(), back.data(), 32);
    for (float v : back) EXPECT_EQ(v, 0.0f) << WeightTypeName(t);
    std::vector<float> infinite = Ramp();
    infinite[3] = std::numeric_limits<float>::infinity();
    Traits(t).from_float(infinite.data(), row.data(), 32);  // must not trip the sanitizers
  }
}

TEST(WeightTypes, RoundTripErrorStaysWithinHalfAStep) {
  std::mt19937 rng(7);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> x(256), back(256);
  for (float& v : x) v = normal(rng);
  for (WeightType t : {WeightType::kF32, WeightType::kF16, WeightType::kBF16, WeightType::kQ8_0, WeightType::kQ4_0}) {
    std::vector<uint8_t> row(RowBytes(t, 256));
    Traits(t).from_float(x.data(), row.data(), 256);
    Traits(t).to_float(row.data(), back.data(), 256);
    for (int b = 0; b < 8; ++b) {
      float amax = 0.0f;
      for (int j = 0; j < 32; ++j) amax = std::max(amax, std::fabs(x[b * 32 + j]));
      for (int j = b * 32; j < b * 32 + 32; ++j) {
        float bound = 0.0f;
        switch (t) {
          case WeightType::kF32: bound = 0.0f; break;
          case WeightType::kF16: bound = std::fabs(x[j]) * 0x1p-11f; break;
          case WeightType::kBF16: bound = std::fabs(x[j]) * 0x1p-8f; break;
          case WeightType::kQ8_0: bound = amax / 127.0f * 0.5f + amax * 0x1p-10f; break;
          case WeightType::kQ4_0:  // a whole step: q = 15 clips the side opposite the signed max
            bound = amax / 8.0f + amax * 0x1p-9f;
            break;
        }
        EXPECT_LE(std::fabs(back[j] - x[j]), bound) << WeightTypeName(t) << " " << j;
      }
    }
  }
}

TEST(WeightTypes, Bfloat16RoundsToNearestEven) {
  EXPECT_EQ(FloatToBfloat16(1.0f + 0x1p-8f), 0x3F80);          // tie: stays even
  EXPECT_EQ(FloatToBfloat16(1.0f + 3 * 0x1p-8f), 0x3F82);      // tie: rounds up to even
  EXPECT_EQ(FloatToBfloat16(1.0f + 0x1p-8f + 0x1p-20f), 0x3F81);
  EXPECT_TRUE(std::isnan(Bfloat16ToFloat(FloatToBfloat16(std::nanf("")))));
}

TEST(WeightTypes, WeightsFlagParsesAutoAndNames) {
  EXPECT_FALSE(ParseWeightsFlag("auto")->has_value());
  EXPECT_EQ(**ParseWeightsFlag("q4_0"), WeightType::kQ4_0);
  absl::StatusOr<std::optional<WeightType>> bad = ParseWeightsFlag("int4");
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("q8_0"), std::string::npos);
}

TEST(PlaceMatrix, KeepsTheSourceInPlaceWhenNothingChanges) {
  std::vector<float> values(4 * 64, 0.5f);
  WeightStorage storage;
  const WeightMatrix src{WeightType::kF32, values.data(), 4, 64};
  absl::StatusOr<WeightMatrix> placed = PlaceMatrix(src, {}, "w", &storage, nullptr);
  ASSERT_TRUE(placed.ok());
  EXPECT_EQ(placed->data, values.data());
  EXPECT_EQ(storage.owned_bytes(), 0u);
}

TEST(PlaceMatrix, ConvertsAndReordersRowsIntoOwnedStorage) {
  std::vector<float> values(3 * 32);
  for (int r = 0; r < 3; ++r) {
    for (int c = 0; c < 32; ++c) values[r * 32 + c] = float(r + 1) * (c % 2 ? 1.0f : -1.0f);
  }
  WeightStorage storage;
  PlaceOptions options;
  options.wanted = WeightType::kQ8_0;
  options.row_order = {2, 0, 1};
  absl::StatusOr<WeightMatrix> placed =
      PlaceMatrix({WeightType::kF32, values.data(), 3, 32}, options, "w", &storage, nullptr);
  ASSERT_TRUE(placed.ok());
  EXPECT_EQ(placed->type, WeightType::kQ8_0);
  EXPECT_EQ(storage.owned_bytes(), 3 * sizeof(BlockQ8_0));
  std::vector<float> row(32);
  placed->RowToFloat(0, row.data());
  EXPECT_NEAR(row[1], 3.0f, 3e-3f);  // source row 2 (fp16 scale: relative 2^-11)
  placed->RowToFloat(1, row.data());
  EXPECT_NEAR(row[0], -1.0f, 1e-3f);  // source row 0
}

TEST(PlaceMatrix, RowsNotWholeBlocksFallBackToF16WithANote) {
  std::vector<float> values(2 * 40, 0.25f);
  WeightStorage storage;
  PlaceOptions options;
  options.wanted = WeightType::kQ4_0;
  std::string note;
  absl::StatusOr<WeightMatrix> placed =
      PlaceMatrix({WeightType::kF32, values.data(), 2, 40}, options, "blk.0.ffn_down", &storage, &note);
  ASSERT_TRUE(placed.ok());
  EXPECT_EQ(placed->type, WeightType::kF16);
  EXPECT_NE(note.find("blk.0.ffn_down"), std::string::npos);
  EXPECT_NE(note.find("f16 instead of q4_0"), std::string::npos);
}

// Panels: element (r, c) at panel r / 16, position c * 16 + r % 16; the last panel padded with zero
// rows. Checked against that formula on the raw bytes, and RowToFloat reads the rows back.
TEST(PlaceMatrix, PanelsHoldColumnsOfSixteenRowsAndPadTheLastPanel) {
  const int64_t rows = 21, cols = 5;  // one whole panel and one of 5 rows
  std::vector<float> values(size_t(rows * cols));
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) values[size_t(r * cols + c)] = float(100 * r + c) + 0.5f;
  }
  WeightStorage storage;
  PlaceOptions options;
  options.panels = true;
  absl::StatusOr<WeightMatrix> placed =
      PlaceMatrix({WeightType::kF32, values.data(), rows, cols}, options, "w", &storage, nullptr);
  ASSERT_TRUE(placed.ok());
  EXPECT_TRUE(placed->panels());
  EXPECT_EQ(placed->stored_rows(), 32);
  EXPECT_EQ(placed->bytes(), size_t(32 * cols * 4));
  EXPECT_EQ(storage.owned_bytes(), placed->bytes());
  const float* raw = static_cast<const float*>(placed->data);
  for (int64_t r = 0; r < 32; ++r) {
    for (int64_t c = 0; c < cols; ++c) {
      const float expected = r < rows ? values[size_t(r * cols + c)] : 0.0f;
      EXPECT_EQ(raw[(r / 16) * 16 * cols + c * 16 + r % 16], expected) << r << "," << c;
    }
  }
  std::vector<float> row(static_cast<size_t>(cols));
  for (int64_t r = 0; r < rows; ++r) {
    placed->RowToFloat(r, row.data());
    EXPECT_TRUE(std::equal(row.begin(), row.end(), values.begin() + r * cols)) << r;
  }
}

// Panels take the type asked for first (f16 and bf16 keep 2 bytes a weight, q4_0 its 18-byte blocks)
// and combine with reordered rows as rows do.
TEST(PlaceMatrix, PanelsFollowTheWantedTypeAndRowOrder) {
  const int64_t rows = 17;  // one whole panel and one of a row
  std::vector<float> values(size_t(rows) * 32);
  for (size_t i = 0; i < values.size(); ++i) values[i] = float(i % 96) * 0.25f - 7.0f;
  std::vector<int64_t> order(static_cast<size_t>(rows));
  for (int64_t r = 0; r < rows; ++r) order[size_t(r)] = (r + 2) % rows;  // row 0 is source row 2
  for (WeightType type : {WeightType::kF16, WeightType::kBF16}) {
    WeightStorage storage;
    PlaceOptions options;
    options.wanted = type;
    options.panels = true;
    options.row_order = order;
    absl::StatusOr<WeightMatrix> placed =
        PlaceMatrix({WeightType::kF32, values.data(), rows, 32}, options, "w", &storage, nullptr);
    ASSERT_TRUE(placed.ok());
    EXPECT_TRUE(placed->panels());
    EXPECT_EQ(placed->bytes(), size_t(32 * 32 * 2));
    std::vector<float> row(32);
    placed->RowToFloat(0, row.data());  // source row 2: quarters below 2^7 are exact in f16 and bf16
    for (int c = 0; c < 32; ++c) EXPECT_EQ(row[size_t(c)], values[size_t(64 + c)]) << WeightTypeName(type);
  }
  WeightStorage storage;
  PlaceOptions options;
  options.wanted = WeightType::kQ4_0;
  options.panels = true;
  absl::StatusOr<WeightMatrix> placed =
      PlaceMatrix({WeightType::kF32, values.data(), rows, 32}, options, "w", &storage, nullptr);
  ASSERT_TRUE(placed.ok());
  EXPECT_TRUE(placed->panels());
  EXPECT_EQ(placed->bytes(), size_t(32) * sizeof(BlockQ4_0));  // two panels of 16 rows
}

// A matrix of fewer rows than a panel stays rows, whatever is asked: padded to a panel, a hostile
// file's 1-row matrix would take 16 times its bytes.
TEST(PlaceMatrix, MatricesOfFewerRowsThanAPanelStayRows) {
  std::vector<float> values(size_t(kPanelRows - 1) * 64, 0.5f);
  for (int64_t rows : {int64_t{1}, kPanelRows - 1}) {
    WeightStorage storage;
    PlaceOptions options;
    options.panels = true;
    options.wanted = WeightType::kF16;
    absl::StatusOr<WeightMatrix> placed =
        PlaceMatrix({WeightType::kF32, values.data(), rows, 64}, options, "w", &storage, nullptr);
    ASSERT_TRUE(placed.ok());
    EXPECT_FALSE(placed->panels()) << rows;
    EXPECT_EQ(storage.owned_bytes(), size_t(rows) * 64 * 2) << rows;
  }
}

// `values` ([rows][cols] f32) placed as `type` twice, in rows and in panels, into `storage`.
struct RowsAndPanels {
  WeightMatrix rows, panels;
};
RowsAndPanels PlaceBoth(WeightType type, const std::vector<float>& values, int64_t rows, int64_t cols,
                        WeightStorage* storage) {
  PlaceOptions options;
  options.wanted = type;
  absl::StatusOr<WeightMatrix> in_rows =
      PlaceMatrix({WeightType::kF32, values.data(), rows, cols}, options, "w", storage, nullptr);
  options.panels = true;
  absl::StatusOr<WeightMatrix> in_panels =
      PlaceMatrix({WeightType::kF32, values.data(), rows, cols}, options, "w", storage, nullptr);
  EXPECT_TRUE(in_rows.ok()) << in_rows.status();
  EXPECT_TRUE(in_panels.ok()) << in_panels.status();
  if (!in_rows.ok() || !in_panels.ok()) return {};
  return {*in_rows, *in_panels};
}

// q8_0 panels: per 32-column block the 16 rows' scales, then column pairs (2q, 2q + 1) as 16 rows x
// 2 int8 -- checked on the raw bytes against the row-major blocks, and CopyRow gives the blocks back.
TEST(PlaceMatrix, Q8_0PanelsHoldScalesThenColumnPairsOfSixteenRows) {
  const int64_t rows = 19, cols = 64;  // two blocks per row; one whole panel and one of 3 rows
  std::vector<float> values(size_t(rows * cols));
  for (size_t i = 0; i < values.size(); ++i) values[i] = std::sin(float(i) * 0.37f) * float(1 + i % 5);
  WeightStorage storage;
  const RowsAndPanels placed = PlaceBoth(WeightType::kQ8_0, values, rows, cols, &storage);
  const WeightMatrix* in_rows = &placed.rows;
  const WeightMatrix* in_panels = &placed.panels;
  ASSERT_TRUE(in_panels->panels());
  EXPECT_EQ(in_panels->bytes(), size_t(32 / 16 * 16) * in_rows->row_bytes());
  const uint8_t* raw = static_cast<const uint8_t*>(in_panels->data);
  for (int64_t r = 0; r < 32; ++r) {
    for (int64_t b = 0; b < cols / 32; ++b) {
      BlockQ8_0 want{};  // the padding rows are zeros
      if (r < rows) std::memcpy(&want, in_rows->row(r) + b * sizeof(BlockQ8_0), sizeof(want));
      const uint8_t* block = raw + size_t(r / 16) * 16 * in_rows->row_bytes() + size_t(b) * 16 * sizeof(BlockQ8_0);
      uint16_t scale;
      std::memcpy(&scale, block + (r % 16) * 2, 2);
      EXPECT_EQ(scale, want.d) << r << "," << b;
      for (int j = 0; j < 32; ++j) {
        EXPECT_EQ(int8_t(block[32 + (j / 2) * 32 + (r % 16) * 2 + j % 2]), want.qs[j]) << r << "," << b << "," << j;
      }
    }
  }
  std::vector<uint8_t> copy(in_rows->row_bytes());
  for (int64_t r = 0; r < rows; ++r) {
    in_panels->CopyRow(r, copy.data());
    EXPECT_EQ(0, std::memcmp(copy.data(), in_rows->row(r), copy.size())) << r;
  }
}

// q4_0 panels: per 32-column block the 16 rows' scales, then the block's 16 nibble bytes in 2-byte
// units of 16 rows (unit u: bytes 2u, 2u + 1 of each row's block) -- checked on the raw bytes against
// the row-major blocks -- and CopyRow and RowToFloat give the rows back.
TEST(PlaceMatrix, Q4_0PanelsHoldScalesThenByteUnitsOfSixteenRows) {
  const int64_t rows = 19, cols = 64;
  std::vector<float> values(size_t(rows * cols));
  for (size_t i = 0; i < values.size(); ++i) values[i] = std::cos(float(i) * 0.29f) * float(1 + i % 7);
  WeightStorage storage;
  const RowsAndPanels placed = PlaceBoth(WeightType::kQ4_0, values, rows, cols, &storage);
  const WeightMatrix* in_rows = &placed.rows;
  const WeightMatrix* in_panels = &placed.panels;
  ASSERT_TRUE(in_panels->panels());
  EXPECT_EQ(in_panels->bytes(), size_t(32) * in_rows->row_bytes());
  const uint8_t* raw = static_cast<const uint8_t*>(in_panels->data);
  for (int64_t r = 0; r < 32; ++r) {
    for (int64_t b = 0; b < cols / 32; ++b) {
      BlockQ4_0 want{};  // the padding rows are zeros
      if (r < rows) std::memcpy(&want, in_rows->row(r) + b * sizeof(BlockQ4_0), sizeof(want));
      const uint8_t* block = raw + size_t(r / 16) * 16 * in_rows->row_bytes() + size_t(b) * 16 * sizeof(BlockQ4_0);
      uint16_t scale;
      std::memcpy(&scale, block + (r % 16) * 2, 2);
      EXPECT_EQ(scale, want.d) << r << "," << b;
      for (int k = 0; k < 16; ++k) {
        EXPECT_EQ(block[32 + (k / 2) * 32 + (r % 16) * 2 + k % 2], want.qs[k]) << r << "," << b << "," << k;
      }
    }
  }
  std::vector<uint8_t> copy(in_rows->row_bytes());
  std::vector<float> a(static_cast<size_t>(cols)), b(static_cast<size_t>(cols));
  for (int64_t r = 0; r < rows; ++r) {
    in_panels->CopyRow(r, copy.data());
    EXPECT_EQ(0, std::memcmp(copy.data(), in_rows->row(r), copy.size())) << r;
    in_panels->RowToFloat(r, a.data());
    in_rows->RowToFloat(r, b.data());
    EXPECT_EQ(a, b) << r;
  }
}

TEST(PlaceMatrix, RejectsBadRowOrders) {
  std::vector<float> values(2 * 32, 0.0f);
  WeightStorage storage;
  PlaceOptions options;
  options.row_order = {0, 2};
  EXPECT_EQ(PlaceMatrix({WeightType::kF32, values.data(), 2, 32}, options, "w", &storage, nullptr).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace a2sf::worker
