// The host side of the emulated CUDA backend: what csrc/cuda/host_utils.h
// takes from c10/cuda on a real build, for CPU tensors and the emulated
// runtime of emu_runtime.h.
#pragma once

#include <c10/util/Exception.h>
#include <torch/library.h>

#include <string>

#include "emu_runtime.h"

// The host files register into the emulated library, for CPU tensors.
#define OTTT_CUDA_LIBRARY_IMPL(m) TORCH_LIBRARY_IMPL(ottt_cuda_emu, CPU, m)
#define OTTT_KERNEL_LAUNCH_CHECK() ::ottt::emu::check_last_launch(__FILE__, __LINE__)

namespace ottt {

constexpr c10::DeviceType kKernelDevice = c10::DeviceType::CPU;

// No device to select.
struct DeviceGuard {
  explicit DeviceGuard(const c10::Device&) {}
};

// The emulated launch runs synchronously; there is one (null) stream.
inline cudaStream_t current_stream() { return nullptr; }

namespace emu {

// C10_CUDA_KERNEL_LAUNCH_CHECK on the emulated runtime: raise the thread's
// last error, if any, and clear it.
inline void check_last_launch(const char* file, int line) {
  const std::string detail = last_error_detail;
  const cudaError_t e = cudaGetLastError();
  TORCH_CHECK(e == cudaSuccess, "CUDA error (emulated device): ", cudaGetErrorString(e), ": ", detail, " (",
              file, ":", line, ")");
}

}  // namespace emu
}  // namespace ottt
