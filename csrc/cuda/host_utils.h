// Host-side helpers of the CUDA launch code (g++ only: includes ATen).
#pragma once

#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <type_traits>

#include "../op_inputs.h"
#include "launchers.h"

namespace ottt {

// The dispatcher picks the CUDA kernel if any tensor argument is on a CUDA
// device; the primary tensor must be one before its device is made current.
inline void check_cuda(const at::Tensor& t, const char* name) {
  TORCH_CHECK_VALUE(t.is_cuda(), name, " must be a CUDA tensor, got one on ", t.device());
}

// The kernels compute in gpu::opmath_t; the CPU kernels in at::opmath_type.
// Both backends must run the same arithmetic.
template <typename scalar_t>
constexpr void assert_same_opmath() {
  static_assert(std::is_same_v<at::opmath_type<scalar_t>, gpu::opmath_t<scalar_t>>,
                "gpu::opmath_t must match at::opmath_type");
}

// Pointer to a tensor's data, or null for an undefined tensor.
template <typename scalar_t>
inline const scalar_t* ptr_or_null(const at::Tensor& t) {
  return t.defined() ? t.data_ptr<scalar_t>() : nullptr;
}

inline cudaStream_t current_stream() { return c10::cuda::getCurrentCUDAStream().stream(); }

}  // namespace ottt
