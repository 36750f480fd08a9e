// The sigmoid surrogate backward for float32 on AVX-512 CPUs (16 lanes):
// grad_x[i] = grad[i] (* mask[i]) * sg(z[i]) * in_scale over [begin, end), sg as
// ottt_math.h's surrogate_grad. Defined in sigmoid_bwd_avx512.cpp, a translation
// unit of its own: ATen's vector type is fixed by the first include of
// ATen/cpu/vec in a unit, and lif_step_cpu.cpp's is the AVX2 one.
//
// Why only this case: every other surrogate backward is bound by its three memory
// streams at AVX2 width already; the sigmoid's vector exp was not (the backward
// alone, 2^20 floats, 1 thread: 0.75-0.78 ms against 0.52 ms for atan and 0.50 ms
// for a plain 3-stream multiply), and 16 lanes halve the instructions the exp
// costs per element.
#pragma once

#include <cstdint>

#include "cpu_isa.h"  // has_avx512_vec(): call sigmoid_bwd_f32 only where it is true

#if (defined(__GNUC__) || defined(__clang__)) && defined(__x86_64__) && !defined(_MSC_VER)
#define OTTT_HAVE_AVX512_SIGMOID 1

namespace ottt {
namespace avx512 {

// mask may be null (no mask).
void sigmoid_bwd_f32(const float* z, const float* grad, const float* mask, float* out, float alpha,
                     float in_scale, int64_t begin, int64_t end);

}  // namespace avx512
}  // namespace ottt

#else
#define OTTT_HAVE_AVX512_SIGMOID 0
#endif
