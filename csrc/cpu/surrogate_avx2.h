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
#include "cpu_isa.h"  // has_avx2_fma()

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

// Fails when ATen/cpu/vec was included earlier in the translation unit
// (then it is the scalar fallback, not the AVX2 type).
static_assert(std::is_convertible_v<at::vec::Vectorized<float>, __m256>, "include surrogate_avx2.h before ATen/cpu/vec");

#include "surrogate_vec_body.h"  // surrogate_grad_vec and lif_step_bwd_range at 8 float lanes

}  // namespace avx2
}  // namespace ottt

#pragma GCC pop_options

#else
#define OTTT_HAVE_AVX2_PATH 0
#endif
