// Test support: the code examples of the docs are the code compiled and tested, word for word.
#pragma once

#include <fstream>
#include <sstream>
#include <string>

namespace test_support
{

// The lines of `text` between the first line containing `begin` and the next containing `end`, both excluded.
inline std::string between(const std::string& text, const std::string& begin, const std::string& end)
{
    std::istringstream lines(text);
    std::string line;
    std::string out;
    bool inside = false;
    while (std::getline(lines, line))
    {
        if (!inside && line.find(begin) != std::string::npos)
        {
            inside = true;
            continue;
        }
        if (inside && line.find(end) != std::string::npos)
        {
            return out;
        }
        if (inside)
        {
            out += line;
            out += '\n';
        }
    }
    return {};
}

inline std::string read_all(const std::string& path)
{
    std::ifstream file(path);
    std::ostringstream text;
    text << file.rdbuf();
    return text.str();
}

// Checks that the code block after `<!-- example: NAME -->` in docs/DOC is the code of `source_file` between
// the lines "// docs/DOC example begin" and "// docs/DOC example end". Returns a message, empty when they agree.
inline std::string compare_doc_example(const std::string& source_file, const std::string& doc, const std::string& name)
{
    const std::string root = source_file.substr(0, source_file.rfind("tests/"));
    const std::string source = read_all(source_file);
    const std::string text = read_all(root + "docs/" + doc);
    if (source.empty() || text.empty())
    {
        return "cannot read " + source_file + " or " + root + "docs/" + doc;
    }
    const std::string in_test = between(source, "// docs/" + doc + " example begin", "// docs/" + doc + " example end");
    const std::size_t marker = text.find("<!-- example: " + name + " -->");
    if (marker == std::string::npos)
    {
        return "docs/" + doc + " lost its example marker for " + name;
    }
    const std::string in_doc = between(text.substr(marker), "```cpp", "```");
    if (in_test.empty())
    {
        return source_file + " has no example markers";
    }
    return in_doc == in_test ? std::string{}
                             : "the example " + name + " of docs/" + doc + " differs from " + source_file;
}

} // namespace test_support
