// Host-side helpers of the CUDA launch code (g++ only: includes ATen).
//
// The same host files also build the emulated-launch extension
// (OTTT_CUDA_EMU, csrc/cuda_emu/): there the ops are registered for CPU tensors
// in their own library, ottt_cuda_emu, and only what has no CPU meaning is
// stubbed: the device guard, the stream, and the launch check, which reads the
// emulated runtime's last error instead of the driver's.
#pragma once

#include <type_traits>

#include "../op_inputs.h"
#include "launchers.h"

#if defined(OTTT_CUDA_EMU)
#include "../cuda_emu/emu_host.h"
#else
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

// Registers the CUDA implementations of ops declared in csrc/op_schemas.h.
#define OTTT_CUDA_LIBRARY_IMPL(m) TORCH_LIBRARY_IMPL(ottt_cuda, CUDA, m)
#define OTTT_KERNEL_LAUNCH_CHECK() C10_CUDA_KERNEL_LAUNCH_CHECK()

namespace ottt {

constexpr c10::DeviceType kKernelDevice = c10::DeviceType::CUDA;
using DeviceGuard = c10::cuda::CUDAGuard;

inline cudaStream_t current_stream() { return c10::cuda::getCurrentCUDAStream().stream(); }

}  // namespace ottt
#endif

namespace ottt {

// The dispatcher picks the CUDA kernel if any tensor argument is on a CUDA
// device; the primary tensor must be one before its device is made current.
inline void check_cuda(const at::Tensor& t, const char* name) {
  TORCH_CHECK_VALUE(t.device().type() == kKernelDevice, name, " must be a ", c10::DeviceTypeName(kKernelDevice),
                    " tensor, got one on ", t.device());
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

}  // namespace ottt
