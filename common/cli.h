// Command-line parsing for every A2SF binary: absl::ParseCommandLine with --help that lists the
// program's (or one subcommand's) own flags and exits 0, and --version that prints the project's
// version. Abseil's own --help looks for flags in a file named like the binary and exits 1 (so do
// --helpfull and the others); this lists the flags by name instead. Call once from main, before any
// flag is read.
#ifndef A2SF_COMMON_CLI_H_
#define A2SF_COMMON_CLI_H_

#include <ostream>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"

namespace a2sf {

// The project's version: the one place it is defined (binaries, deploy tags and metrics use it).
inline constexpr char kVersion[] = "0.1.0";

struct CliUsage {
  std::string program;  // e.g. "a2sf-worker" or "a2sf generate"
  std::string summary;  // what it does and how it is called; may span lines
  // The flags --help lists, in this order; empty: every flag linked in from this project (none of
  // Abseil's own).
  std::vector<std::string> flags;
};

// Prints `usage` and its flags (name, default, help text); `full` adds every other flag the binary
// has (Abseil's included); a non-empty `match` lists only flags whose name contains it.
void PrintUsage(std::ostream& out, const CliUsage& usage, bool full = false, absl::string_view match = "");

// --help / -h / --helpshort anywhere before "--": PrintUsage to stdout and exit 0; --helpfull (and
// --helppackage): the same with every other flag too; --helpmatch=S: the flags whose name contains S
// (Abseil's versions of these exit 1 and look for flags in the wrong file); --version:
// "<program> <kVersion>" and exit 0. Otherwise absl::ParseCommandLine (which exits 1 with a message
// for an unknown flag or a bad value) and its positional arguments.
std::vector<char*> ParseCommandLine(int argc, char** argv, const CliUsage& usage);

// Prints the help argv asks for (as above) to stdout.
void PrintHelp(int argc, char** argv, const CliUsage& usage);

// True when argv asks for help (as above), without parsing: for programs that choose the usage by
// a subcommand.
bool WantsHelp(int argc, char** argv);

}  // namespace a2sf

#endif  // A2SF_COMMON_CLI_H_
