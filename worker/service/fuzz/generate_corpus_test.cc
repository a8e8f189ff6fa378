// Replays the kept corpus of the Generate fuzzer (worker/service/fuzz/corpus) in-process: every input
// runs to its end or is refused with a documented code (the target aborts otherwise), and the seeds
// that are valid requests still generate.
#include <dirent.h>

#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "worker/service/fuzz/generate_fuzz_target.h"
#include "worker/testing/fixtures.h"

namespace a2sf::worker {
namespace {

std::vector<std::string> CorpusFiles() {
  std::vector<std::string> files;
  const std::string dir = "worker/service/fuzz/corpus";
  if (DIR* d = opendir(dir.c_str())) {
    while (dirent* e = readdir(d)) {
      if (e->d_name[0] != '.') files.push_back(dir + "/" + e->d_name);
    }
    closedir(d);
  }
  return files;
}

TEST(GenerateCorpus, EveryInputRunsOrIsRefusedWithADocumentedCode) {
  A2SF_REQUIRE_FIXTURES();
  const std::vector<std::string> files = CorpusFiles();
  ASSERT_GE(files.size(), 10u) << "the corpus went missing";
  int ran = 0, refused = 0;
  for (const std::string& file : files) {
    std::ifstream in(file, std::ios::binary);
    std::stringstream bytes;
    bytes << in.rdbuf();
    const std::string data = bytes.str();
    const absl::Status status = GenerateFuzzInput(reinterpret_cast<const uint8_t*>(data.data()), data.size());
    status.ok() ? ++ran : ++refused;
    const bool valid_seed = file.find("seed-text-") != std::string::npos || file.find("seed-ids-") != std::string::npos ||
                            file.find("seed-bulk") != std::string::npos || file.find("seed-sampling") != std::string::npos ||
                            file.find("seed-tiny-temperature") != std::string::npos;
    if (valid_seed) {
      EXPECT_TRUE(status.ok()) << file << ": " << status;
    }
    if (file.find("seed-empty-text") != std::string::npos || file.find("seed-unknown-prefill") != std::string::npos) {
      EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << file << ": " << status;
    }
  }
  EXPECT_GT(ran, 0);
  EXPECT_GT(refused, 0);
}

}  // namespace
}  // namespace a2sf::worker
