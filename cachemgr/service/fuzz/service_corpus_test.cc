// Replays the kept fuzz corpus (cachemgr/service/fuzz/corpus) through the cache-manager service:
// every script runs to its end (a finding aborts), and the corpus as a whole reaches both accepted
// and refused calls and decided steps of ScoreBatches.
#include <dirent.h>

#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "cachemgr/service/fuzz/service_fuzz_target.h"
#include "gtest/gtest.h"

namespace a2sf::cachemgr {
namespace {

TEST(ServiceCorpus, EveryScriptRunsAndCallsAreAnsweredWithClearStatuses) {
  std::vector<std::string> files;
  const std::string dir = "cachemgr/service/fuzz/corpus";
  if (DIR* d = opendir(dir.c_str())) {
    while (dirent* e = readdir(d)) {
      if (e->d_name[0] != '.') files.push_back(dir + "/" + e->d_name);
    }
    closedir(d);
  }
  ASSERT_GE(files.size(), 4u) << "the corpus went missing";
  FuzzRunCounts total;
  for (const std::string& file : files) {
    std::ifstream in(file, std::ios::binary);
    std::stringstream bytes;
    bytes << in.rdbuf();
    const std::string data = bytes.str();
    const FuzzRunCounts counts = RunServiceFuzzInput(reinterpret_cast<const uint8_t*>(data.data()), data.size());
    total.calls += counts.calls;
    total.ok += counts.ok;
    total.refused += counts.refused;
    total.batch_steps_decided += counts.batch_steps_decided;
  }
  EXPECT_GT(total.ok, 0);
  EXPECT_GT(total.refused, 0);
  EXPECT_GT(total.batch_steps_decided, 0) << "no seed reaches a decided step of a ScoreBatch";
}

}  // namespace
}  // namespace a2sf::cachemgr
