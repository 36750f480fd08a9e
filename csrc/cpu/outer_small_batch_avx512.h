// outer_accumulate_'s small-batch CPU kernel (OTTT's online regime): one pass of
// grad_w [out, in] += sum_k (alpha g[k, i]) a[k, :] over 1 to 8 rows k of g and a,
// float32, AVX-512, the rows of grad_w streamed once.
//
// Why not addmm_ as for larger batches: with few rows a GEMM is a rank-k update,
// bound by streaming grad_w through the cache, and MKL's sgemm adds a fixed
// cost per call (packing, dispatch) that this loop does not have. Measured at
// 512 x 512, 1 thread: 1.1-1.5x faster than grad_w.addmm_(g.t(), a) at batch
// 1-8 (benchmarks/results/kernels_cpu.md). Four rows of grad_w at a time, so
// each vector of a loaded from L1 feeds four FMAs.
//
// Compiled for AVX-512F by a target attribute, called only when the CPU has it
// (has_avx512f(), which also honours ATEN_CPU_CAPABILITY: cpu_isa.h); elsewhere the caller keeps addmm_. Intrinsics only, so no
// ATen vector header is involved (compare surrogate_avx2.h).
#pragma once

#include <cstdint>

#include "cpu_isa.h"  // has_avx512f()

#if (defined(__GNUC__) || defined(__clang__)) && defined(__x86_64__) && !defined(_MSC_VER)
#define OTTT_HAVE_AVX512_OUTER 1
#include <immintrin.h>

namespace ottt {
namespace avx512 {

#define OTTT_AVX512 __attribute__((target("avx512f"), always_inline)) inline

// R rows of w starting at w0 (row stride `in`), one 16-wide column block at j; m masks the
// last, partial block. c[r * N + k] = alpha g[k, row r]. (A helper, not a lambda: a lambda
// would not inherit the target attribute.)
template <int N, int R>
OTTT_AVX512 void outer_block(float* w0, int64_t in, const float* a, const __m512* c, int64_t j, __mmask16 m) {
  __m512 acc[R];
  for (int r = 0; r < R; ++r) acc[r] = _mm512_maskz_loadu_ps(m, w0 + r * in + j);
  for (int k = 0; k < N; ++k) {
    const __m512 va = _mm512_maskz_loadu_ps(m, a + k * in + j);
    for (int r = 0; r < R; ++r) acc[r] = _mm512_fmadd_ps(c[r * N + k], va, acc[r]);
  }
  for (int r = 0; r < R; ++r) _mm512_mask_storeu_ps(w0 + r * in + j, m, acc[r]);
}

// R rows starting at row i, every column block.
template <int N, int R>
OTTT_AVX512 void outer_row_group(float* w, const float* g, const float* a, int64_t out, int64_t in, float alpha,
                                 int64_t i) {
  __m512 c[R * N];
  for (int r = 0; r < R; ++r)
    for (int k = 0; k < N; ++k) c[r * N + k] = _mm512_set1_ps(alpha * g[k * out + i + r]);
  float* w0 = w + i * in;
  const int64_t full = in - in % 16;
  for (int64_t j = 0; j < full; j += 16) outer_block<N, R>(w0, in, a, c, j, static_cast<__mmask16>(0xFFFF));
  if (full < in) outer_block<N, R>(w0, in, a, c, full, static_cast<__mmask16>((1u << (in - full)) - 1u));
}

// Rows [r0, r1) of w. g is [N, out], a is [N, in], both contiguous.
template <int N>
__attribute__((target("avx512f"), noinline)) void outer_rows(float* w, const float* g, const float* a, int64_t out,
                                                             int64_t in, float alpha, int64_t r0, int64_t r1) {
  constexpr int R = 4;  // rows per group: each vector of a loaded from L1 feeds R FMAs
  int64_t i = r0;
  for (; i + R <= r1; i += R) outer_row_group<N, R>(w, g, a, out, in, alpha, i);
  for (; i < r1; ++i) outer_row_group<N, 1>(w, g, a, out, in, alpha, i);
}

#undef OTTT_AVX512

// outer_rows<n> for a runtime n in [1, 8] (the batch becomes a compile-time
// constant, so the k loop unrolls and the coefficients stay in registers).
inline void outer_rows_n(int64_t n, float* w, const float* g, const float* a, int64_t out, int64_t in, float alpha,
                         int64_t r0, int64_t r1) {
  switch (n) {
    case 1: outer_rows<1>(w, g, a, out, in, alpha, r0, r1); break;
    case 2: outer_rows<2>(w, g, a, out, in, alpha, r0, r1); break;
    case 3: outer_rows<3>(w, g, a, out, in, alpha, r0, r1); break;
    case 4: outer_rows<4>(w, g, a, out, in, alpha, r0, r1); break;
    case 5: outer_rows<5>(w, g, a, out, in, alpha, r0, r1); break;
    case 6: outer_rows<6>(w, g, a, out, in, alpha, r0, r1); break;
    case 7: outer_rows<7>(w, g, a, out, in, alpha, r0, r1); break;
    default: outer_rows<8>(w, g, a, out, in, alpha, r0, r1); break;
  }
}

}  // namespace avx512
}  // namespace ottt

#else
#define OTTT_HAVE_AVX512_OUTER 0
#endif
