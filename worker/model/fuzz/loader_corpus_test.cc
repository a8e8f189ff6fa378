// Replays the kept fuzz corpus (worker/model/fuzz/corpus) through the loaders (llama2.c, GGUF with its
// tokenizer, safetensors): every input loads or
// fails with a clear status, and the seeds that are valid models still load.
#include <dirent.h>

#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "worker/model/fuzz/loader_fuzz_target.h"

namespace a2sf::worker {
namespace {

std::vector<std::string> CorpusFiles() {
  std::vector<std::string> files;
  const std::string dir = "worker/model/fuzz/corpus";
  if (DIR* d = opendir(dir.c_str())) {
    while (dirent* e = readdir(d)) {
      if (e->d_name[0] != '.') files.push_back(dir + "/" + e->d_name);
    }
    closedir(d);
  }
  return files;
}

TEST(LoaderCorpus, EveryInputLoadsOrFailsWithAMessage) {
  const std::vector<std::string> files = CorpusFiles();
  ASSERT_GE(files.size(), 8u) << "the corpus went missing";
  int loaded = 0, refused = 0;
  for (const std::string& file : files) {
    std::ifstream in(file, std::ios::binary);
    std::stringstream bytes;
    bytes << in.rdbuf();
    const std::string data = bytes.str();
    const absl::Status status = LoadFuzzInput(reinterpret_cast<const uint8_t*>(data.data()), data.size());
    if (status.ok()) {
      ++loaded;
    } else {
      ++refused;
      EXPECT_FALSE(status.message().empty()) << file;
    }
    // The valid seeds (named seed-valid-*) must keep loading; the GGUF breakages must not.
    if (file.find("seed-valid-") != std::string::npos) {
      EXPECT_TRUE(status.ok()) << file << ": " << status;
    }
    if (file.find("seed-gguf-") != std::string::npos) {
      EXPECT_FALSE(status.ok()) << file << " loaded";
    }
  }
  EXPECT_GT(loaded, 0);
  EXPECT_GT(refused, 0);
}

}  // namespace
}  // namespace a2sf::worker
