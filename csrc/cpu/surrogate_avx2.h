// AVX2 loop of the lif_step backward for float and double, the way ATen's own
// CPU kernels vectorize (at::vec::Vectorized, Sleef's exp): grad_x = grad *
// (mask) * sg(z) * in_scale, sg the surrogate derivative of ottt_math.h's
// surrogate_grad, written here with vector operations in the same order
// (csrc/ottt_math.h stays the one definition CUDA and the scalar tail use).
//
// Why a separate ISA region: the extension is built for baseline x86-64
// (SSE2), where the compiler cannot vectorize std::exp and calls it once per
// element; that scalar exp made the sigmoid backward cost several times its
// bytes. ATen compiles such kernels once per ISA and picks one at run time; we
// do the same for one function: it is compiled for AVX2 + FMA
// (GCC/Clang target pragma) and called only when the CPU has both
// (has_avx2_fma()). Everything else in the translation unit stays baseline.
//
// Include this header LAST in a .cpp (after every torch header): it must be
// the first to include ATen/cpu/vec, under AVX2, so that Vectorized<float> is
// the AVX2 specialization and not the scalar fallback (checked below).
#pragma once

#include <cstdint>
#include <type_traits>

#include "../ottt_math.h"

#if (defined(__GNUC__) || defined(__clang__)) && defined(__x86_64__) && !defined(_MSC_VER)
#define OTTT_HAVE_AVX2_PATH 1

#pragma GCC push_options
#pragma GCC target("avx2,fma")
#define CPU_CAPABILITY AVX2
#define CPU_CAPABILITY_AVX2
// g++ does not define the ISA macros for a target pragma in C++ (gcc does in
// C); sleef.h declares its AVX2 functions only under them. Defined for these
// includes only.
#if !defined(__AVX2__)
#define OTTT_DEFINED_ISA_MACROS
#define __AVX__ 1
#define __AVX2__ 1
#define __FMA__ 1
#endif
#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>
#if defined(OTTT_DEFINED_ISA_MACROS)
#undef __AVX__
#undef __AVX2__
#undef __FMA__
#undef OTTT_DEFINED_ISA_MACROS
#endif

namespace ottt {
namespace avx2 {

using at::vec::Vectorized;
// Fails when ATen/cpu/vec was included earlier in the translation unit
// (then it is the scalar fallback, not the AVX2 type).
static_assert(std::is_convertible_v<Vectorized<float>, __m256>, "include surrogate_avx2.h before ATen/cpu/vec");

// sg(z) on a vector; each case mirrors surrogate_grad (ottt_math.h) term by term.
template <Surrogate K, typename T>
inline Vectorized<T> surrogate_grad_vec(Vectorized<T> z, T alpha) {
  using V = Vectorized<T>;
  if constexpr (K == Surrogate::Sigmoid) {
    // exp_u20: ATen's polynomial exp (the one its softmax/attention kernels use),
    // ~2.4e-6 relative error for float, where Sleef's exp (u10) cost half of this
    // loop's time (1.0 -> 0.5 ms per 2^20 floats). sg (1 - sg) has relative
    // sensitivity <= 1 to exp's error, well inside float32's test tolerance
    // (rtol 1e-5). For double exp_u20 is Sleef's exp.
    const V sg = (V(T(1)) + (V(-alpha) * z).exp_u20()).reciprocal();
    // exp_u20 clamps its argument, which turns a NaN into a finite number: keep the
    // NaN of a NaN membrane, as the scalar formula (and the reference) do.
    return V::blendv(V(alpha) * sg * (V(T(1)) - sg), z, z.isnan());
  } else if constexpr (K == Surrogate::ATan) {
    const V k = V(T(1.5707963267948966) * alpha) * z;
    return V(alpha) / (V(T(2)) * (V(T(1)) + k * k));
  } else if constexpr (K == Surrogate::Triangle) {
    // fmax(x, 0) of the scalar code: 0 wins over NaN there; blendv keeps that.
    const V r = V(T(1)) - V(alpha) * z.abs();
    return V(alpha) * V::blendv(V(T(0)), r, r > V(T(0)));
  } else {
    return (z.abs() < V(T(0.5) / alpha)) & V(alpha);  // the compare is an all-ones mask
  }
}

// grad_x[i] = grad[i] (* mask[i]) * sg(z[i]) * in_scale for i in [begin, end);
// the tail shorter than one vector runs the scalar formula.
template <Surrogate K, bool HasMask, typename T>
__attribute__((noinline)) void lif_step_bwd_range(const T* zp, const T* gp, const T* mp, T* op, T alpha,
                                                   T in_scale, int64_t begin, int64_t end) {
  using V = Vectorized<T>;
  constexpr int64_t W = V::size();
  int64_t i = begin;
  for (; i + W <= end; i += W) {
    V gs = V::loadu(gp + i);
    if constexpr (HasMask) gs = gs * V::loadu(mp + i);
    (gs * surrogate_grad_vec<K, T>(V::loadu(zp + i), alpha) * V(in_scale)).store(op + i);
  }
  for (; i < end; ++i) {
    T gs = gp[i];
    if constexpr (HasMask) gs *= mp[i];
    op[i] = gs * surrogate_grad(K, zp[i], alpha) * in_scale;
  }
}

}  // namespace avx2
}  // namespace ottt

#pragma GCC pop_options

namespace ottt {
// True when this CPU runs the AVX2 + FMA path (checked once).
inline bool has_avx2_fma() {
  static const bool ok = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return ok;
}
}  // namespace ottt

#else
#define OTTT_HAVE_AVX2_PATH 0
#endif
