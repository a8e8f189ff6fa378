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

using Names = std::initializer_list<absl::string_view>;
using Flags = std::vector<absl::CommandLineFlag*>;

bool IsOwnFlag(const absl::CommandLineFlag& flag) { return !absl::StrContains(flag.Filename(), "absl/"); }

// The first argument before "--" that is one of `names` (a name ending in '=' matches as a prefix);
// empty if none.
absl::string_view FindArg(int argc, char** argv, Names names) {
  for (int i = 1; i < argc; ++i) {
    const absl::string_view arg = argv[i];
    if (arg == "--") return {};
    for (absl::string_view name : names) {
      if (arg == name || (absl::EndsWith(name, "=") && absl::StartsWith(arg, name))) return arg;
    }
  }
  return {};
}

// Abseil's help flags, which would otherwise print its own (empty) text and exit 1.
constexpr Names kShortHelp = {"--help", "-help", "-h", "--helpshort", "-helpshort"};
constexpr Names kFullHelp = {"--helpfull", "-helpfull", "--helppackage", "-helppackage", "--helpmatch=", "-helpmatch="};

void SortByName(Flags* flags) {
  std::sort(flags->begin(), flags->end(), [](auto* a, auto* b) { return a->Name() < b->Name(); });
}

void PrintFlag(std::ostream& out, const absl::CommandLineFlag& flag) {
  const std::string value = flag.DefaultValue();
  out << "  --" << flag.Name() << " (default: " << (value.empty() ? "\"\"" : value) << ")\n      " << flag.Help()
      << "\n";
}

// Every flag the binary has that `usage` did not list (Abseil's own included), sorted by name; with
// `match`, only those whose name contains it.
Flags OtherFlags(const Flags& listed, absl::string_view match) {
  Flags others;
  for (const auto& [name, flag] : absl::GetAllFlags()) {
    if (std::find(listed.begin(), listed.end(), flag) == listed.end() && absl::StrContains(name, match)) {
      others.push_back(flag);
    }
  }
  SortByName(&others);
  return others;
}

}  // namespace

void PrintUsage(std::ostream& out, const CliUsage& usage, bool full, absl::string_view match) {
  out << usage.program << " " << kVersion << ": " << usage.summary << "\n\nFlags:\n";
  std::vector<absl::CommandLineFlag*> flags;
  if (usage.flags.empty()) {
    for (const auto& [name, flag] : absl::GetAllFlags()) {
      if (IsOwnFlag(*flag)) flags.push_back(flag);
    }
    SortByName(&flags);
  } else {
    for (const std::string& name : usage.flags) {
      if (absl::CommandLineFlag* flag = absl::FindCommandLineFlag(name)) flags.push_back(flag);
    }
  }
  for (const absl::CommandLineFlag* flag : flags) {
    if (absl::StrContains(flag->Name(), match)) PrintFlag(out, *flag);
  }
  out << "  --help      print this and exit\n  --helpfull  print every flag, Abseil's included, and exit\n"
         "  --version   print the version and exit\n";
  const Flags others = full ? OtherFlags(flags, match) : Flags();
  if (!others.empty()) out << "\nAll other flags (linked in, Abseil's included):\n";
  for (const absl::CommandLineFlag* flag : others) PrintFlag(out, *flag);
}

bool WantsHelp(int argc, char** argv) {
  return !FindArg(argc, argv, kShortHelp).empty() || !FindArg(argc, argv, kFullHelp).empty();
}

void PrintHelp(int argc, char** argv, const CliUsage& usage) {
  const absl::string_view full = FindArg(argc, argv, kFullHelp);
  const size_t equals = full.find('=');
  PrintUsage(std::cout, usage, !full.empty(), equals == absl::string_view::npos ? "" : full.substr(equals + 1));
}

std::vector<char*> ParseCommandLine(int argc, char** argv, const CliUsage& usage) {
  absl::FlagsUsageConfig config;
  config.version_string = [program = usage.program] { return program + " " + kVersion + "\n"; };
  absl::SetFlagsUsageConfig(config);
  absl::SetProgramUsageMessage(usage.summary);
  if (WantsHelp(argc, argv)) {
    PrintHelp(argc, argv, usage);
    std::exit(0);
  }
  if (!FindArg(argc, argv, {"--version", "-version"}).empty()) {
    std::cout << usage.program << " " << kVersion << "\n";
    std::exit(0);
  }
  return absl::ParseCommandLine(argc, argv);
}

}  // namespace a2sf
