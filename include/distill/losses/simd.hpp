#pragma once
// Vector arithmetic for the fused losses' CPU row kernels: 8 floats at a time (GCC/Clang vector
// extensions), an exponential with its range reduction and polynomial, and dispatch to an
// AVX2 + FMA build of a kernel when the CPU has it.
//
// Why not at::vec::Vectorized: ATen selects its vector width and its vectorised exp (SLEEF)
// at compile time from CPU_CAPABILITY macros that only ATen's own kernel files define. In a
// header-only library compiled with the user's flags, Vectorized<float>::exp is a loop over
// std::exp (bench/results/simd_exp.txt), slower than ATen's exp pass. A kernel here is written
// once as an always-inline template and instantiated inside a function with
// __attribute__((target("avx2,fma"))), so it runs with 256-bit registers whatever flags the
// user compiles with. Other CPUs keep the ATen-op path (detail::row_kernel_applies): built for
// plain x86-64, the exponential here is slower than glibc's scalar one (simd_exp.txt).

#include <cstdint>
#include <cstring>

// GCC only for now: the kernels use GCC's vector extensions with vector conditions and
// scalar operands, which are not tested with Clang here (Clang builds take the ATen path).
#if defined(__GNUC__) && !defined(__clang__) && (defined(__x86_64__) || defined(__i386__))
#define DISTILL_SIMD_X86 1
#define DISTILL_TARGET_AVX2 __attribute__((target("avx2,fma")))
#else
#define DISTILL_TARGET_AVX2
#endif
#if defined(__GNUC__) || defined(__clang__)
#define DISTILL_ALWAYS_INLINE inline __attribute__((always_inline))
#else
#define DISTILL_ALWAYS_INLINE inline
#endif

namespace distill::detail::simd {

#if defined(__GNUC__) && !defined(__clang__)
#define DISTILL_SIMD 1
// Vectors go in and out of functions by reference only: a 32-byte vector passed or returned by
// value has another calling convention with AVX than without, which GCC notes (-Wpsabi) in
// every translation unit. Scalars broadcast in arithmetic with a vector (v * 2.0f).
typedef float f8 __attribute__((vector_size(32)));
typedef int32_t i8 __attribute__((vector_size(32)));

constexpr int64_t kWidth = 8;
/// Float lane sums that run over a long row are added into a double every kFlush elements, so
/// that their rounding stays that of 64 terms per lane, not C / 8.
constexpr int64_t kFlush = 512;

DISTILL_ALWAYS_INLINE void load(f8& v, const float* p) { std::memcpy(&v, p, sizeof v); }
DISTILL_ALWAYS_INLINE void store(float* p, const f8& v) { std::memcpy(p, &v, sizeof v); }
DISTILL_ALWAYS_INLINE float sum(const f8& v) {
  float s = 0;
  for (int64_t i = 0; i < kWidth; ++i) s += v[i];
  return s;
}
/// The largest lane; `m` (e.g. the row's first entry) when every lane is smaller or NaN.
DISTILL_ALWAYS_INLINE float max(const f8& v, float m) {
  for (int64_t i = 0; i < kWidth; ++i) m = v[i] > m ? v[i] : m;
  return m;
}

/// The largest entry of a row a[0..C) (NaN entries skipped unless all are NaN).
DISTILL_ALWAYS_INLINE float row_max(const float* a, int64_t C) {
  const int64_t body = C - C % kWidth;
  f8 va, ma = a[0] + f8{};
  for (int64_t c = 0; c < body; c += kWidth) load(va, a + c), ma = va > ma ? va : ma;
  float m = max(ma, a[0]);
  for (int64_t c = body; c < C; ++c) m = a[c] > m ? a[c] : m;
  return m;
}

/// The largest entries of two rows a[0..C) and b[0..C), in one pass (NaN entries skipped
/// unless all are NaN).
DISTILL_ALWAYS_INLINE void row_maxima(const float* a, const float* b, int64_t C, float& max_a, float& max_b) {
  const int64_t body = C - C % kWidth;
  f8 va, vb, ma = a[0] + f8{}, mb = b[0] + f8{};
  for (int64_t c = 0; c < body; c += kWidth) {
    load(va, a + c), load(vb, b + c);
    ma = va > ma ? va : ma, mb = vb > mb ? vb : mb;
  }
  max_a = max(ma, a[0]), max_b = max(mb, b[0]);
  for (int64_t c = body; c < C; ++c) max_a = a[c] > max_a ? a[c] : max_a, max_b = b[c] > max_b ? b[c] : max_b;
}

/// y = exp(x) per lane, within 2 ulp for x in [-87.33, 88.37]; 0 below (where float's normal
/// range ends), inf above, NaN for NaN. Range reduction x = n ln2 + r with |r| <= ln2 / 2 (ln2
/// in two parts), Cephes's polynomial for exp(r), and 2^n built from the exponent bits.
DISTILL_ALWAYS_INLINE void exp(f8& y, const f8& x) {
  const float lo = -87.3365478515625f, hi = 88.3762626647949f;  // 2^n stays finite up to hi
  f8 c = x < lo ? lo + f8{} : x;
  c = c > hi ? 88.0f + f8{} : c;
  const float magic = 12582912.0f;  // 1.5 * 2^23: adding and subtracting it rounds to nearest
  const f8 n = (c * 1.44269504088896341f + magic) - magic;
  f8 r = c - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  f8 p = r * 1.9875691500e-4f + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * (r * r) + r + 1.0f;
  const i8 bits = (__builtin_convertvector(n, i8) + 127) << 23;
  y = p * (f8)bits;  // a vector cast keeps the bits
  y = x < lo ? f8{} : y;
  y = x > hi ? __builtin_inff() + f8{} : y;
  y = x != x ? x : y;
}

/// y = log(x) per lane, within 2 ulp for normal and subnormal x > 0; -inf at 0, NaN below 0
/// or for NaN, inf at inf. x = m 2^e with m in [sqrt(1/2), sqrt(2)), Cephes's polynomial for
/// log(m), e ln2 added in two parts.
DISTILL_ALWAYS_INLINE void log(f8& y, const f8& x) {
  const float smallest_normal = 1.17549435e-38f;
  const i8 tiny = x < smallest_normal;
  const f8 scaled = tiny ? x * 8388608.0f : x;  // subnormals times 2^23 become normal
  const i8 bits = (i8)scaled;
  f8 e = __builtin_convertvector(((bits >> 23) & 0xff) - 126, f8);
  e = tiny ? e - 23.0f : e;
  f8 m = (f8)((bits & 0x007fffff) | 0x3f000000);  // the mantissa in [1/2, 1)
  const i8 low = m < 0.707106781186547524f;
  e = low ? e - 1.0f : e;
  m = low ? m + m - 1.0f : m - 1.0f;
  const f8 z = m * m;
  f8 p = m * 7.0376836292e-2f - 1.1514610310e-1f;
  p = p * m + 1.1676998740e-1f;
  p = p * m - 1.2420140846e-1f;
  p = p * m + 1.4249322787e-1f;
  p = p * m - 1.6668057665e-1f;
  p = p * m + 2.0000714765e-1f;
  p = p * m - 2.4999993993e-1f;
  p = p * m + 3.3333331174e-1f;
  p = p * m * z;
  p = p + e * -2.12194440e-4f;
  p = p - z * 0.5f;
  y = m + p + e * 0.693359375f;
  y = x == 0.0f ? -__builtin_inff() + f8{} : y;
  y = x < 0.0f || x != x ? __builtin_nanf("") + f8{} : y;
  y = x == __builtin_inff() ? x : y;
}
#endif

/// Whether the CPU runs the AVX2 + FMA build of the kernels (checked once).
inline bool has_avx2() {
#if defined(DISTILL_SIMD_X86)
  static const bool yes = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return yes;
#else
  return false;
#endif
}

}  // namespace distill::detail::simd
