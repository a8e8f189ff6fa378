// libFuzzer entry point (built by scripts/fuzz.sh with clang -fsanitize=fuzzer,address,undefined).
#include "worker/service/fuzz/generate_fuzz_target.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  a2sf::worker::GenerateFuzzInput(data, size).IgnoreError();
  return 0;
}
