// Locates the stories260K fixtures for tests: $A2SF_FIXTURES (scripts/test.sh sets it to
// ../shared/fixtures beside the checkout). Tests skip with a message when they are absent.
#ifndef A2SF_WORKER_TESTING_FIXTURES_H_
#define A2SF_WORKER_TESTING_FIXTURES_H_

#include <string>

namespace a2sf::worker::testing {

// Folder holding the fixtures, or "" when there is none.
std::string FixturesDir();

}  // namespace a2sf::worker::testing

#define A2SF_REQUIRE_FIXTURES()                                                              \
  if (::a2sf::worker::testing::FixturesDir().empty()) {                                      \
    GTEST_SKIP() << "stories260K fixtures not found (set A2SF_FIXTURES to the fixtures folder)"; \
  }

#endif  // A2SF_WORKER_TESTING_FIXTURES_H_
