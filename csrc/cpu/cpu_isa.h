// Whether the CPU kernels' AVX-512 loops may run: the CPU has the instructions
// and ATEN_CPU_CAPABILITY, PyTorch's own switch for its CPU kernels, does not ask
// for less. Set to "default" or "avx2", it turns ottt_cuda's AVX-512 loops off as
// well (the same results by the AVX2 or BLAS path: for debugging, for CPUs that
// slow their clock under AVX-512, and for the tests that compare the paths). The
// AVX2 loops are chosen by the CPU alone. Read once per process.
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

}  // namespace ottt
