// The CUDA kernels of csrc/cuda/, as written, compiled by a C++ compiler
// against the emulated runtime (OTTT_CUDA_EMU: see emu_runtime.h). One
// translation unit: the kernel files have no ATen and build in seconds. It is
// the part a sanitized build instruments (scripts/build_cuda_emu.py), so it
// also says which sanitizer that was.
#ifndef OTTT_CUDA_EMU
#error "build this file with -DOTTT_CUDA_EMU (scripts/build_cuda_emu.py)"
#endif

#include "../cuda/lif_multistep_kernels.cu"
#include "../cuda/lif_step_kernels.cu"
#include "../cuda/outer_accumulate_kernels.cu"
#include "../cuda/trace_update_kernels.cu"

namespace ottt {
namespace emu {

const char* sanitizer_build() {
#ifdef OTTT_EMU_SANITIZE
  return OTTT_EMU_SANITIZE;  // e.g. "address,undefined" or "thread"
#else
  return "";
#endif
}

}  // namespace emu
}  // namespace ottt
