// PaddleClas YAML configs into JSON recipes (include/distill/train/yaml.hpp).

#include "distill/train/yaml.hpp"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <regex>
#include <vector>

#include "distill/config/file.hpp"

#ifdef DISTILL_HAVE_YAML
#include <yaml-cpp/yaml.h>
#endif

namespace distill::train {

#ifdef DISTILL_HAVE_YAML
namespace {

/// A plain scalar typed as PyYAML's safe loader types it (YAML 1.1), numbers with an exponent
/// and no dot included.
json plain_scalar(const std::string& text) {
  static const std::regex null_re("~|null|Null|NULL|");
  static const std::regex true_re("yes|Yes|YES|true|True|TRUE|on|On|ON");
  static const std::regex false_re("no|No|NO|false|False|FALSE|off|Off|OFF");
  static const std::regex int_re("[-+]?(0|[1-9][0-9_]*)");
  static const std::regex hex_re("[-+]?0x[0-9a-fA-F_]+");
  static const std::regex float_re("[-+]?([0-9][0-9_]*)?\\.[0-9_]*([eE][-+]?[0-9]+)?|[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+");
  static const std::regex inf_re("[-+]?\\.(inf|Inf|INF)");
  static const std::regex nan_re("\\.(nan|NaN|NAN)");
  auto digits = [](std::string s) {
    s.erase(std::remove(s.begin(), s.end(), '_'), s.end());
    return s;
  };
  if (std::regex_match(text, null_re)) return nullptr;
  if (std::regex_match(text, true_re)) return true;
  if (std::regex_match(text, false_re)) return false;
  try {
    if (std::regex_match(text, int_re)) return std::stoll(digits(text));
    if (std::regex_match(text, hex_re)) return std::stoll(digits(text), nullptr, 16);
    if (text != "." && std::regex_match(text, float_re)) return std::stod(digits(text));
  } catch (const std::out_of_range&) {
    return text;  // beyond int64 or double: the recipe's reader reports it where it is used
  }
  if (std::regex_match(text, inf_re)) return text[0] == '-' ? -HUGE_VAL : HUGE_VAL;
  if (std::regex_match(text, nan_re)) return std::nan("");
  return text;
}

struct Converter {
  std::string file;
  std::map<std::string, int>* lines;

  json convert(const YAML::Node& node, const std::string& path, int depth) {
    if (depth > 100) fail_at(file + ":" + std::to_string(node.Mark().line + 1), path, ": nested deeper than 100 levels");
    if (lines && !path.empty()) (*lines)[path] = node.Mark().line + 1;
    switch (node.Type()) {
      case YAML::NodeType::Null:
      case YAML::NodeType::Undefined:
        return nullptr;
      case YAML::NodeType::Scalar:
        // "!" is the tag of a quoted scalar: a string whatever it holds.
        return node.Tag() == "!" ? json(node.Scalar()) : plain_scalar(node.Scalar());
      case YAML::NodeType::Sequence: {
        json out = json::array();
        for (size_t i = 0; i < node.size(); ++i) out.push_back(convert(node[i], path + "[" + std::to_string(i) + "]", depth + 1));
        return out;
      }
      case YAML::NodeType::Map: {
        auto child = [&path](const std::string& key) { return path.empty() ? key : path + "." + key; };
        json out = json::object();
        std::vector<YAML::Node> merged;
        for (const auto& item : node) {
          const auto key = item.first.Scalar();
          if (key == "<<") {  // merge key: the aliased maps' entries that this map lacks
            if (item.second.IsMap()) merged.push_back(item.second);
            else if (item.second.IsSequence())
              for (const auto& m : item.second) merged.push_back(m);
            continue;
          }
          if (out.contains(key))
            fail_at(file + ":" + std::to_string(item.first.Mark().line + 1), child(key),
                    ": the key appears twice");
          out[key] = convert(item.second, child(key), depth + 1);
        }
        for (const auto& m : merged)
          for (const auto& item : m) {
            const auto key = item.first.Scalar();
            if (!out.contains(key)) out[key] = convert(item.second, child(key), depth + 1);
          }
        return out;
      }
    }
    return nullptr;
  }
};

}  // namespace

bool yaml_available() { return true; }

json load_yaml(const std::string& path, std::map<std::string, int>* lines) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) fail_at(path, "is a directory, not a recipe file");
  YAML::Node root;
  try {
    root = YAML::LoadFile(path);
  } catch (const YAML::BadFile&) {
    fail_at(path, "cannot open the file");
  } catch (const YAML::Exception& e) {
    fail_at(path + ":" + std::to_string(e.mark.line + 1), "not valid YAML: ", e.msg);
  }
  Converter converter{path, lines};
  auto recipe = converter.convert(root, "", 0);
  if (!recipe.is_object()) fail_at(path, "a recipe is a mapping of sections (Global, Arch, Loss, ...)");
  return recipe;
}

#else

bool yaml_available() { return false; }

json load_yaml(const std::string& path, std::map<std::string, int>*) {
  fail_at(path, "this distill was built without yaml-cpp (install libyaml-cpp-dev and rebuild), so it reads JSON recipes only");
}

#endif

json load_recipe_file(const std::string& path, std::map<std::string, int>* lines) {
  const auto extension = std::filesystem::path(path).extension().string();
  if (extension == ".yaml" || extension == ".yml") return load_yaml(path, lines);
  return config::load_file(path);
}

}  // namespace distill::train
