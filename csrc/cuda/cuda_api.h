// The CUDA runtime API the kernels and their launchers use, and the one way
// they launch a kernel. Under nvcc (and in the CUDA build's host files) this
// is the real runtime and OTTT_LAUNCH is exactly `kernel<<<grid, block, smem,
// stream>>>`. With OTTT_CUDA_EMU defined (the emulated-launch extension,
// csrc/cuda_emu/) the same kernel source is compiled by a C++ compiler and
// OTTT_LAUNCH runs every (block, thread) of the grid on the host.
//
//   OTTT_LAUNCH(grid, block, smem, stream, kernel<TemplateArgs...>)(args...);
//
// The kernel comes last because a template argument list may hold commas.
#pragma once

#if defined(OTTT_CUDA_EMU)
#include "../cuda_emu/emu_runtime.h"
#define OTTT_LAUNCH(grid, block, smem, stream, ...) \
  ::ottt::emu::Launch<decltype(&__VA_ARGS__)>(#__VA_ARGS__, &__VA_ARGS__, (grid), (block), (smem), (stream))
#else
#include <cuda_runtime.h>
#define OTTT_LAUNCH(grid, block, smem, stream, ...) __VA_ARGS__<<<(grid), (block), (smem), (stream)>>>
#endif
