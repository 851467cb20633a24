#pragma once
// Recipe files: reading JSON with errors that name the file, the reference's `-o` overrides,
// and dropping a recipe's own weight files. Needs only nlohmann_json: a program that hands a
// recipe to the engine includes this and not the builders (config/build.hpp).

#include <cctype>
#include <filesystem>
#include <fstream>
#include <optional>
#include <string>

#include "distill/core/reader.hpp"

namespace distill::config {

using distill::json;
using distill::Reader;

/// How deep a recipe (or an `-o` value) may nest. Recipes nest 6 levels; the bound keeps a
/// hostile file of 100,000 nested lists from overflowing the stack in the recursive code that
/// walks, copies and frees JSON values.
constexpr int max_json_depth = 100;

namespace detail {
inline json::parser_callback_t depth_limit(const std::string& where) {
  return [where](int depth, json::parse_event_t, json&) {
    if (depth > max_json_depth) fail_at(where, "nested deeper than ", max_json_depth, " levels");
    return true;
  };
}
}  // namespace detail

/// Parses JSON text; `where` names its origin in errors (syntax, numbers beyond double, depth).
inline json parse_json(std::istream& in, const std::string& where) {
  try {
    return json::parse(in, detail::depth_limit(where));
  } catch (const json::exception& e) {
    fail_at(where, "not valid JSON: ", e.what());
  }
}

/// Reads a JSON file; a syntax error names the file and the position.
inline json load_file(const std::string& path) {
  std::ifstream in(path);
  if (!in) fail_at(path, "cannot open the file");
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) fail_at(path, "is a directory, not a recipe file");
  return parse_json(in, path);
}

namespace detail {
/// An override's value as PaddleClas users write it (its tools evaluate it as a Python
/// literal; YAML spellings are common too): True/False/None, true/false/null/~, numbers,
/// lists and dicts with single- or double-quoted strings. Nullopt when it is none of these.
inline std::optional<json> literal_value(const std::string& text, const std::string& where) {
  try {
    return json::parse(text, depth_limit(where));
  } catch (const json::exception&) {
  }
  // Python and YAML words outside quotes become JSON's; single quotes become double quotes.
  std::string converted;
  char quote = 0;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (quote) {
      if (c == '\\' && i + 1 < text.size()) {
        converted += c;
        converted += text[++i];
        continue;
      }
      if (c == quote) {
        quote = 0;
        converted += '"';
      } else {
        converted += c == '"' ? std::string("\\\"") : std::string(1, c);
      }
      continue;
    }
    if (c == '\'' || c == '"') {
      quote = c;
      converted += '"';
      continue;
    }
    if (std::isalpha(static_cast<unsigned char>(c)) || c == '~') {
      size_t end = i;
      while (end < text.size() && (std::isalnum(static_cast<unsigned char>(text[end])) || text[end] == '_' || text[end] == '~'))
        ++end;
      const std::string word = text.substr(i, end - i);
      if (word == "True" || word == "true") converted += "true";
      else if (word == "False" || word == "false") converted += "false";
      else if (word == "None" || word == "null" || word == "~") converted += "null";
      else return std::nullopt;  // another word: not a literal
      i = end - 1;
      continue;
    }
    converted += c;
  }
  try {
    return json::parse(converted, depth_limit(where));
  } catch (const json::exception&) {
    return std::nullopt;
  }
}
}  // namespace detail

/// Applies one override (the reference's `-o`) to `config`: "Dotted.Path[i].key=value", or
/// with list indices as path elements as PaddleClas writes them ("Arch.models.0.Teacher.x=1").
/// Every step of the path but the last must exist (a mistyped section is an error listing the
/// keys there). The last key may be new, as in PaddleClas (e.g. a class_num for a model entry
/// that has none); a mistyped one is then refused where the recipe is read, as an unknown key
/// naming its path. The value is read as a literal (numbers,
/// true/false/null and True/False/None, lists, quoted strings; see detail::literal_value) and
/// otherwise taken as a plain string ("1.0/255.0", a file name).
///
///   apply_override(recipe, "Arch.models[0].Teacher.pretrained=weights/resnet34.pth");
///   apply_override(recipe, "Arch.models.0.Teacher.pretrained=weights/resnet34.pth");   // the same
inline void apply_override(json& config, const std::string& assignment) {
  const auto eq = assignment.find('=');
  const std::string where = "override '" + assignment + "'";
  if (eq == std::string::npos || eq == 0) fail_at(where, "expected Dotted.Key=value");
  const std::string path = assignment.substr(0, eq), text = assignment.substr(eq + 1);
  json* node = &config;
  std::string at;
  size_t i = 0;
  while (i < path.size()) {
    if (path[i] == '[') {
      const auto close = path.find(']', i);
      const std::string index = close == std::string::npos ? "" : path.substr(i + 1, close - i - 1);
      if (index.empty() || index.size() > 9 || index.find_first_not_of("0123456789") != std::string::npos)
        fail_at(where, "bad index at '", path.substr(i), "'");
      const size_t n = std::stoul(index);
      if (!node->is_array() || n >= node->size())
        fail_at(where, at.empty() ? "the root" : at, " has no element [", n, "]",
                node->is_array() ? " (it has " + std::to_string(node->size()) + ")" : " (not a list)");
      node = &(*node)[n];
      at += "[" + index + "]";
      i = close + 1;
      if (i < path.size() && path[i] == '.') ++i;
      continue;
    }
    const auto end = path.find_first_of(".[", i);
    const std::string key = path.substr(i, end == std::string::npos ? std::string::npos : end - i);
    if (node->is_array() && !key.empty() && key.size() <= 9 && key.find_first_not_of("0123456789") == std::string::npos) {
      const size_t n = std::stoul(key);  // "models.0": PaddleClas's spelling of models[0]
      if (n >= node->size())
        fail_at(where, at.empty() ? "the root" : at, " has no element [", n, "] (it has ", node->size(), ")");
      node = &(*node)[n];
      at += "[" + key + "]";
      i = end == std::string::npos ? path.size() : (path[end] == '.' ? end + 1 : end);
      continue;
    }
    const bool last = end == std::string::npos;
    if (!node->is_object() || (!node->contains(key) && !last)) {
      std::string keys;
      if (node->is_object())
        for (const auto& item : node->items()) keys += (keys.empty() ? "" : ", ") + item.key();
      fail_at(where, at.empty() ? "the root" : at, " has no key '", key, "'", keys.empty() ? "" : "; its keys are " + keys);
    }
    node = &(*node)[key];
    at += (at.empty() ? "" : ".") + key;
    i = end == std::string::npos ? path.size() : (path[end] == '.' ? end + 1 : end);
  }
  // As in the reference, what is not a literal is a string.
  auto value = detail::literal_value(text, where);
  *node = value ? std::move(*value) : json(text);
}

/// Sets every "pretrained" / "pretrained_list" entry of an Arch section to none, for runs
/// that take all weights from one file afterwards (evaluation, inference, export).
inline void drop_pretrained(json& node) {
  if (node.is_object()) {
    for (auto& [key, value] : node.items()) {
      if (key == "pretrained") value = false;
      else if (key == "pretrained_list") value = nullptr;
      else drop_pretrained(value);
    }
  } else if (node.is_array()) {
    for (auto& item : node) drop_pretrained(item);
  }
}

}  // namespace distill::config
