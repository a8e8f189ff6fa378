// libFuzzer entry point (built by scripts/fuzz.sh with clang -fsanitize=fuzzer,address,undefined).
#include "worker/model/fuzz/loader_fuzz_target.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  a2sf::worker::LoadFuzzInput(data, size).IgnoreError();
  return 0;
}
