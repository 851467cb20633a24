#pragma once
// Resource limits: sizes an input may declare before distill allocates for it. A recipe, a
// weights file, an image or a dataset file can state sizes far beyond what it holds or what
// the machine has (a 756-byte JPEG declaring 16384x16384 pixels, a ConvNet of depth 1e18);
// each limit turns that into a named error before the allocation. Every limit can be raised
// through its environment variable, read once per process.

#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <string>

#include "distill/core/error.hpp"

namespace distill {

/// The limits in force (see docs/design.md, "Resource limits").
///
///   DISTILL_MAX_IMAGE_PIXELS=400000000 distill train -c recipe.json   # huge scans
struct Limits {
  /// Pixels of one decoded image (width x height); 2^26 = 67 megapixels, 201 MB as RGB.
  int64_t max_image_pixels = int64_t{1} << 26;
  /// Bytes of one decompressed dataset file (an idx file of Fashion-MNIST); 2^32 = 4 GiB.
  int64_t max_dataset_bytes = int64_t{1} << 32;
  /// Parameters of one network (or loss module) that options may build: by default as many as
  /// fill the machine's memory with their float32 weights and gradients (8 bytes each).
  int64_t max_parameters = physical_memory() / 8;
  /// Any single size a recipe gives (a width, a depth, a class count, a batch size).
  int64_t max_size = int64_t{1} << 24;

  static int64_t physical_memory() {
    const long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGE_SIZE);
    return pages > 0 && page > 0 ? static_cast<int64_t>(pages) * page : int64_t{1} << 36;
  }
  static int64_t from_env(const char* name, int64_t fallback) {
    const char* text = std::getenv(name);
    if (text == nullptr || *text == '\0') return fallback;
    char* end = nullptr;
    const long long value = std::strtoll(text, &end, 10);
    if (*end != '\0' || value <= 0) fail_at(std::string("environment variable ") + name, "must be a positive integer, got '", text, "'");
    return value;
  }
};

/// The process's limits: the defaults above, each replaced by its environment variable
/// (DISTILL_MAX_IMAGE_PIXELS, DISTILL_MAX_DATASET_BYTES, DISTILL_MAX_PARAMETERS, DISTILL_MAX_SIZE).
inline const Limits& limits() {
  static const Limits current = [] {
    Limits l;
    l.max_image_pixels = Limits::from_env("DISTILL_MAX_IMAGE_PIXELS", l.max_image_pixels);
    l.max_dataset_bytes = Limits::from_env("DISTILL_MAX_DATASET_BYTES", l.max_dataset_bytes);
    l.max_parameters = Limits::from_env("DISTILL_MAX_PARAMETERS", l.max_parameters);
    l.max_size = Limits::from_env("DISTILL_MAX_SIZE", l.max_size);
    return l;
  }();
  return current;
}

/// Checks one size from options or a recipe: in [min, limits().max_size].
///
///   check_size("ConvNet", "depth", options.depth());
inline void check_size(std::string_view owner, std::string_view arg, int64_t value, int64_t min = 1) {
  if (value < min) fail(owner, ": ", arg, " must be >= ", min, ", got ", value);
  if (value > limits().max_size)
    fail(owner, ": ", arg, " of ", value, " is beyond the size limit ", limits().max_size,
         " (raise it with the environment variable DISTILL_MAX_SIZE)");
}

/// Checks the parameter count that options imply, before the network is built: `estimate`
/// (a double, so that a product of huge sizes cannot overflow) against limits().max_parameters.
///
///   check_parameters("ConvNet", 9.0 * width * width * depth);
inline void check_parameters(std::string_view owner, double estimate) {
  if (estimate > static_cast<double>(limits().max_parameters))
    fail(owner, ": these options make about ", estimate, " parameters, beyond the limit of ", limits().max_parameters,
         " (the machine's memory for float32 weights and gradients; raise it with the environment variable "
         "DISTILL_MAX_PARAMETERS)");
}

}  // namespace distill
