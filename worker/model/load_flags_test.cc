#include "worker/model/load_flags.h"

#include "absl/flags/flag.h"
#include "gtest/gtest.h"

namespace a2sf::worker {
namespace {

// The shared flags reach LoadOptions: --weights names the type (a bad name is INVALID_ARGUMENT and
// names the accepted values), --panels the layout (on unless turned off).
TEST(LoadFlags, WeightsAndPanelsReachTheLoadOptions) {
  absl::StatusOr<LoadOptions> defaults = LoadOptionsFromFlags();
  ASSERT_TRUE(defaults.ok());
  EXPECT_FALSE(defaults->weights.has_value());
  EXPECT_TRUE(defaults->panels);

  absl::SetFlag(&FLAGS_weights, "q8_0");
  absl::SetFlag(&FLAGS_panels, false);
  absl::StatusOr<LoadOptions> set = LoadOptionsFromFlags();
  ASSERT_TRUE(set.ok());
  EXPECT_EQ(set->weights, WeightType::kQ8_0);
  EXPECT_FALSE(set->panels);

  absl::SetFlag(&FLAGS_weights, "q5_k");
  absl::StatusOr<LoadOptions> bad = LoadOptionsFromFlags();
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("q4_0"), std::string::npos) << bad.status();
  absl::SetFlag(&FLAGS_weights, "auto");
  absl::SetFlag(&FLAGS_panels, true);
}

// --kv_type: f32 by default, f16 when asked, anything else INVALID_ARGUMENT naming both.
TEST(LoadFlags, KvTypeIsF32F16OrQ8_0) {
  EXPECT_EQ(*KvTypeFromFlags(), WeightType::kF32);
  absl::SetFlag(&FLAGS_kv_type, "f16");
  EXPECT_EQ(*KvTypeFromFlags(), WeightType::kF16);
  absl::SetFlag(&FLAGS_kv_type, "q8_0");
  EXPECT_EQ(*KvTypeFromFlags(), WeightType::kQ8_0);
  for (const char* bad : {"q4_0", "bf16", "", "F16", "q8"}) {
    absl::SetFlag(&FLAGS_kv_type, bad);
    absl::StatusOr<WeightType> type = KvTypeFromFlags();
    EXPECT_EQ(type.status().code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_NE(type.status().message().find("f32, f16 or q8_0"), std::string::npos) << type.status();
  }
  absl::SetFlag(&FLAGS_kv_type, "f32");
}

}  // namespace
}  // namespace a2sf::worker
