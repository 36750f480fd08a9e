// Which of the CPU kernels' vector loops may run, decided once per process: the
// one home of these checks (the AVX2 surrogate loops, the fused sWS kernels, the
// AVX-512 sigmoid backward and outer_accumulate_'s small-batch loop all ask here).
//
// ATEN_CPU_CAPABILITY, PyTorch's own switch for its CPU kernels, set to "default"
// or "avx2", turns ottt_cuda's AVX-512 loops off as well (the same results by the
// AVX2 or BLAS path: for debugging, for CPUs that slow their clock under AVX-512,
// and for the tests that compare the paths). The AVX2 loops are chosen by the CPU
// alone.
#pragma once

#include <cstdlib>
#include <cstring>

namespace ottt {

inline bool avx512_allowed_by_env() {
  static const bool ok = [] {
    const char* cap = std::getenv("ATEN_CPU_CAPABILITY");
    return cap == nullptr || *cap == '\0' || std::strcmp(cap, "avx512") == 0;
  }();
  return ok;
}

#if (defined(__GNUC__) || defined(__clang__)) && defined(__x86_64__) && !defined(_MSC_VER)
// AVX2 + FMA: the surrogate backward loops (surrogate_avx2.h) and the fused sWS kernels (ws_cpu.cpp).
inline bool has_avx2_fma() {
  static const bool ok = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return ok;
}

// AVX-512F, allowed by ATEN_CPU_CAPABILITY: outer_accumulate_'s intrinsics loop (outer_small_batch_avx512.h).
inline bool has_avx512f() {
  static const bool ok = avx512_allowed_by_env() && __builtin_cpu_supports("avx512f");
  return ok;
}

// What ATen's AVX-512 vector type uses (F, DQ, BW, VL), allowed by ATEN_CPU_CAPABILITY: the float32
// sigmoid backward (sigmoid_bwd_avx512.h).
inline bool has_avx512_vec() {
  static const bool ok = avx512_allowed_by_env() && __builtin_cpu_supports("avx512f") &&
                         __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512bw") &&
                         __builtin_cpu_supports("avx512vl");
  return ok;
}
#endif

}  // namespace ottt
