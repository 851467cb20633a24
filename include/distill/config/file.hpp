#pragma once
// Recipe files: reading JSON with errors that name the file, the reference's `-o` overrides,
// and dropping a recipe's own weight files. Needs only nlohmann_json: a program that hands a
// recipe to the engine includes this and not the builders (config/build.hpp).

#include <filesystem>
#include <fstream>
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

/// Applies one override "Dotted.Path[i].key=value" (the reference's `-o`) to `config`. Every
/// step of the path must exist: a mistyped key is an error listing the keys there, not a new
/// key. The value is read as JSON (numbers, true/false/null, lists, quoted strings) and
/// otherwise taken as a plain string.
///
///   apply_override(recipe, "Arch.models[0].Teacher.pretrained=weights/resnet34.pth");
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
    if (!node->is_object() || !node->contains(key)) {
      std::string keys;
      if (node->is_object())
        for (const auto& item : node->items()) keys += (keys.empty() ? "" : ", ") + item.key();
      fail_at(where, at.empty() ? "the root" : at, " has no key '", key, "'", keys.empty() ? "" : "; its keys are " + keys);
    }
    node = &(*node)[key];
    at += (at.empty() ? "" : ".") + key;
    i = end == std::string::npos ? path.size() : (path[end] == '.' ? end + 1 : end);
  }
  try {
    *node = json::parse(text, detail::depth_limit(where));
  } catch (const json::exception&) {  // as in the reference, what is not a value is a string
    *node = text;
  }
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
