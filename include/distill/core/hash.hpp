#pragma once
// A fast non-cryptographic 64-bit hash of bytes (FNV-1a over 8-byte words, then a final mix):
// what a teacher cache uses to tell its files and its sources apart, not a defence against
// tampering.

#include <cstdint>
#include <cstring>
#include <string>

namespace distill::detail {

inline uint64_t hash_bytes(const void* data, size_t size, uint64_t h = 0xcbf29ce484222325ULL) {
  constexpr uint64_t kPrime = 0x100000001b3ULL;
  const auto* bytes = static_cast<const unsigned char*>(data);
  size_t i = 0;
  for (; i + 8 <= size; i += 8) {
    uint64_t word;
    std::memcpy(&word, bytes + i, 8);
    h = (h ^ word) * kPrime;
  }
  for (; i < size; ++i) h = (h ^ bytes[i]) * kPrime;
  h ^= size;
  h ^= h >> 33;
  h *= 0xff51afd7ed558ccdULL;
  return h ^ (h >> 33);
}

inline uint64_t hash_string(const std::string& s, uint64_t h = 0xcbf29ce484222325ULL) {
  return hash_bytes(s.data(), s.size(), h);
}

/// 16 hex digits, as manifests write hashes.
inline std::string hex(uint64_t h) {
  static const char* digits = "0123456789abcdef";
  std::string out(16, '0');
  for (int i = 15; i >= 0; --i, h >>= 4) out[static_cast<size_t>(i)] = digits[h & 15];
  return out;
}

}  // namespace distill::detail
