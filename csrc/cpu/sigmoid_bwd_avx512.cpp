// See sigmoid_bwd_avx512.h. The loop and the formula are surrogate_avx2.h's
// sigmoid case at 16 lanes, compiled from the same source (surrogate_vec_body.h):
// this unit is compiled for AVX-512 (GCC/Clang target pragma, as surrogate_avx2.h
// does for AVX2) and its function is called only when the CPU has it
// (has_avx512_vec(), cpu_isa.h); nothing else here uses AVX-512.
#include "sigmoid_bwd_avx512.h"

#if OTTT_HAVE_AVX512_SIGMOID
#include "../ottt_math.h"

#pragma GCC push_options
#pragma GCC target("avx512f,avx512dq,avx512bw,avx512vl,avx2,fma")
#define CPU_CAPABILITY AVX512
#define CPU_CAPABILITY_AVX512
// As in surrogate_avx2.h: g++ does not define the ISA macros for a target pragma,
// and sleef.h / ATen's headers declare their AVX-512 code only under them.
#if !defined(__AVX512F__)
#define OTTT_DEFINED_ISA_MACROS
#define __AVX__ 1
#define __AVX2__ 1
#define __FMA__ 1
#define __AVX512F__ 1
#define __AVX512DQ__ 1
#define __AVX512BW__ 1
#define __AVX512VL__ 1
#endif
// (-Wpsabi: GCC notes that lambdas in ATen's bfloat16 vector code pass AVX-512 values; unused here.)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wpsabi"
#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>
#pragma GCC diagnostic pop
#if defined(OTTT_DEFINED_ISA_MACROS)
#undef __AVX__
#undef __AVX2__
#undef __FMA__
#undef __AVX512F__
#undef __AVX512DQ__
#undef __AVX512BW__
#undef __AVX512VL__
#undef OTTT_DEFINED_ISA_MACROS
#endif

namespace ottt {
namespace avx512 {
namespace {

static_assert(at::vec::Vectorized<float>::size() == 16, "ATen/cpu/vec was included before this unit's AVX-512 setup");

#include "surrogate_vec_body.h"  // the AVX2 loop's source, here at 16 float lanes

}  // namespace

void sigmoid_bwd_f32(const float* z, const float* grad, const float* mask, float* out, float alpha,
                     float in_scale, int64_t begin, int64_t end) {
  if (mask != nullptr) lif_step_bwd_range<Surrogate::Sigmoid, true, float>(z, grad, mask, out, alpha, in_scale, begin, end);
  else lif_step_bwd_range<Surrogate::Sigmoid, false, float>(z, grad, mask, out, alpha, in_scale, begin, end);
}

}  // namespace avx512
}  // namespace ottt

#pragma GCC pop_options
#endif
