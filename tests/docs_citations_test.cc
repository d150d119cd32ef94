// Docs match the code: every `docs/X.md, "Section"` citation in the tree (sources, presets,
// docs, Python, benchmarks, README) names a file that exists and a section heading in it.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "pimtrain/base/io.h"

namespace pim {
namespace {

namespace fs = std::filesystem;

const std::string kRoot = PIMTRAIN_SOURCE_DIR;

// A heading's words without the #'s and backticks.
std::string HeadingText(const std::string& line) {
  size_t i = line.find_first_not_of('#');
  std::string t = line.substr(i == std::string::npos ? line.size() : i);
  t.erase(std::remove(t.begin(), t.end(), '`'), t.end());
  const size_t b = t.find_first_not_of(' '), e = t.find_last_not_of(' ');
  return b == std::string::npos ? "" : t.substr(b, e - b + 1);
}

// The headings of a markdown file.
std::vector<std::string> Headings(const std::string& file) {
  std::vector<std::string> out;
  std::istringstream in(ReadFile(file));
  bool fenced = false;
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("```", 0) == 0) fenced = !fenced;
    if (!fenced && line.rfind("#", 0) == 0) out.push_back(HeadingText(line));
  }
  return out;
}

// A citation names a section when a heading is the cited words, or begins with them followed
// by punctuation or a space ("Mapping" cites "Mapping: FC and CONV layers onto fixed arrays").
bool Names(const std::string& heading, const std::string& section) {
  if (heading == section) return true;
  if (heading.size() <= section.size() || heading.compare(0, section.size(), section) != 0) {
    return false;
  }
  const char next = heading[section.size()];
  return next == ':' || next == ' ' || next == '(' || next == ',';
}

// A file's text with comment markers removed and lines joined, so that a citation broken over
// two comment lines is still one.
std::string Joined(const std::string& file) {
  std::istringstream in(ReadFile(file));
  std::string out;
  static const std::regex kMarker(R"(^\s*(//+|#+|\*|-)?\s*)");
  for (std::string line; std::getline(in, line);) {
    out += std::regex_replace(line, kMarker, "") + " ";
  }
  return out;
}

struct Citation {
  std::string from, doc, section;
};

std::vector<Citation> FindCitations() {
  // docs/X.md "S", docs/X.md, "S", docs/X.md ("S"), docs/X.md, section "S".
  static const std::regex kCitation(
      R"re(docs/([A-Za-z0-9_]+\.md)[,:]?\s*\(?\s*(?:section\s+)?"([^"]{1,80})")re");
  std::vector<Citation> out;
  for (const char* top : {"src", "presets", "docs", "python", "bench", "tools", "tests", "examples",
                          "sweeps", "configs", "scripts", "README.md"}) {
    const fs::path p = fs::path(kRoot) / top;
    if (!fs::exists(p)) continue;
    std::vector<fs::path> files;
    if (fs::is_regular_file(p)) {
      files.push_back(p);
    } else {
      for (const auto& e : fs::recursive_directory_iterator(p)) {
        if (!e.is_regular_file()) continue;
        const std::string ext = e.path().extension().string();
        if (ext == ".cc" || ext == ".h" || ext == ".md" || ext == ".yaml" || ext == ".py" ||
            ext == ".sh" || ext == ".txt") {
          files.push_back(e.path());
        }
      }
    }
    for (const auto& f : files) {
      if (f.filename() == "docs_citations_test.cc") continue;  // its own examples
      const std::string text = Joined(f.string());
      for (std::sregex_iterator it(text.begin(), text.end(), kCitation), end; it != end; ++it) {
        out.push_back({fs::relative(f, kRoot).string(), "docs/" + (*it)[1].str(), (*it)[2].str()});
      }
    }
  }
  return out;
}

TEST(DocsCitationsTest, EveryCitedDocSectionExists) {
  const std::vector<Citation> citations = FindCitations();
  ASSERT_GT(citations.size(), 20u) << "the scan found too few citations: is the pattern right?";
  for (const auto& c : citations) {
    const std::string file = kRoot + "/" + c.doc;
    if (!FileExists(file)) {
      ADD_FAILURE() << c.from << " cites " << c.doc << ", which does not exist";
      continue;
    }
    bool found = false;
    for (const auto& h : Headings(file)) found = found || Names(h, c.section);
    if (found) continue;
    ADD_FAILURE() << c.from << " cites " << c.doc << ", \"" << c.section
                  << "\": no such section heading";
  }
}

TEST(DocsCitationsTest, TheMatcherAcceptsHeadingsThatBeginWithTheCitedWords) {
  EXPECT_TRUE(Names("Mapping: FC and CONV layers onto fixed arrays", "Mapping"));
  EXPECT_TRUE(Names("bitserial_sram (T-PIM)", "bitserial_sram"));
  EXPECT_FALSE(Names("Mappings", "Mapping"));
  EXPECT_FALSE(Names("Figures", "Figures of a preset"));
  EXPECT_EQ(HeadingText("## `bitserial_sram` (T-PIM)"), "bitserial_sram (T-PIM)");
}

}  // namespace
}  // namespace pim
