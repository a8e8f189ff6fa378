#include "common/cli.h"

#include <algorithm>
#include <cstdlib>
#include <iostream>

#include "absl/flags/commandlineflag.h"
#include "absl/flags/parse.h"
#include "absl/flags/reflection.h"
#include "absl/flags/usage.h"
#include "absl/flags/usage_config.h"
#include "absl/strings/match.h"
#include "absl/strings/string_view.h"

namespace a2sf {

namespace {

bool IsOwnFlag(const absl::CommandLineFlag& flag) { return !absl::StrContains(flag.Filename(), "absl/"); }

bool ArgIs(int argc, char** argv, std::initializer_list<absl::string_view> names) {
  for (int i = 1; i < argc; ++i) {
    const absl::string_view arg = argv[i];
    if (arg == "--") return false;
    if (std::find(names.begin(), names.end(), arg) != names.end()) return true;
  }
  return false;
}

}  // namespace

void PrintUsage(std::ostream& out, const CliUsage& usage) {
  out << usage.program << " " << kVersion << ": " << usage.summary << "\n\nFlags:\n";
  std::vector<absl::CommandLineFlag*> flags;
  if (usage.flags.empty()) {
    for (const auto& [name, flag] : absl::GetAllFlags()) {
      if (IsOwnFlag(*flag)) flags.push_back(flag);
    }
    std::sort(flags.begin(), flags.end(), [](auto* a, auto* b) { return a->Name() < b->Name(); });
  } else {
    for (const std::string& name : usage.flags) {
      if (absl::CommandLineFlag* flag = absl::FindCommandLineFlag(name)) flags.push_back(flag);
    }
  }
  for (const absl::CommandLineFlag* flag : flags) {
    const std::string value = flag->DefaultValue();
    out << "  --" << flag->Name() << " (default: " << (value.empty() ? "\"\"" : value) << ")\n      "
        << flag->Help() << "\n";
  }
  out << "  --help     print this and exit\n  --version  print the version and exit\n";
}

bool WantsHelp(int argc, char** argv) { return ArgIs(argc, argv, {"--help", "-help", "-h", "--helpshort"}); }

std::vector<char*> ParseCommandLine(int argc, char** argv, const CliUsage& usage) {
  absl::FlagsUsageConfig config;
  config.version_string = [program = usage.program] { return program + " " + kVersion + "\n"; };
  absl::SetFlagsUsageConfig(config);
  absl::SetProgramUsageMessage(usage.summary);
  if (WantsHelp(argc, argv)) {
    PrintUsage(std::cout, usage);
    std::exit(0);
  }
  if (ArgIs(argc, argv, {"--version", "-version"})) {
    std::cout << usage.program << " " << kVersion << "\n";
    std::exit(0);
  }
  return absl::ParseCommandLine(argc, argv);
}

}  // namespace a2sf
