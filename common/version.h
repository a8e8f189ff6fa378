// The project's version, reported by build_info metrics (and by --version where binaries print it).
#ifndef A2SF_COMMON_VERSION_H_
#define A2SF_COMMON_VERSION_H_

namespace a2sf {

inline constexpr char kVersion[] = "0.1.0";

}  // namespace a2sf

#endif  // A2SF_COMMON_VERSION_H_
