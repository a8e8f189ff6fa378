// The CUDA library links (cudart, cuBLAS, NCCL) wherever the toolkit is installed; its GPU part runs
// only where a GPU is present and is skipped, with the reason, elsewhere.
#include "common/cuda/cuda_probe.h"
#include "common/cuda/device.h"
#include "gtest/gtest.h"

namespace a2sf {
namespace {

TEST(CudaLink, LibraryVersionsAreReportedWithoutAGpu) {
  const std::string versions = CudaLibraryVersions();
  if (!BuiltWithCuda()) {
    EXPECT_EQ(versions, "built without CUDA");
    GTEST_SKIP() << "built without a CUDA toolkit (A2SF_DISABLE_CUDA or no nvcc)";
  }
  int runtime = 0, cublas = 0, nccl = 0;
  cuda_probe::LibraryVersions(&runtime, &cublas, &nccl);
  // These calls need no driver: a linked library always reports a version.
  EXPECT_GE(runtime, 11000) << versions;
  EXPECT_GT(cublas, 0) << versions;
  EXPECT_GE(nccl, 20000) << versions;
  EXPECT_NE(versions.find("cuBLAS"), std::string::npos);
}

TEST(CudaLink, NoGpuIsReportedAsUnavailableNotACrash) {
  absl::StatusOr<int> count = CudaDeviceCount();
  if (count.ok()) {
    EXPECT_GE(*count, 1);
  } else {
    EXPECT_EQ(count.status().code(), absl::StatusCode::kUnavailable);
    EXPECT_NE(count.status().message().find("no usable CUDA GPU"), std::string::npos);
  }
}

TEST(CudaLink, KernelAndCublasComputeSaxpyOnTheGpu) {
  absl::StatusOr<int> count = CudaDeviceCount();
  if (!count.ok()) GTEST_SKIP() << "skipping the GPU part: " << count.status().message();
  float max_abs_difference = -1.0f;
  const char* error_text = "";
  ASSERT_EQ(cuda_probe::SaxpySelfTest(100000, &max_abs_difference, &error_text), 0) << error_text;
  EXPECT_LE(max_abs_difference, 1e-4f);
}

}  // namespace
}  // namespace a2sf
