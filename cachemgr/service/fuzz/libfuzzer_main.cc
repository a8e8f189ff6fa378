// libFuzzer entry point for the cache-manager service target (scripts/fuzz.sh builds it with clang).
#include <cstddef>
#include <cstdint>

#include "cachemgr/service/fuzz/service_fuzz_target.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  a2sf::cachemgr::RunServiceFuzzInput(data, size);
  return 0;
}
