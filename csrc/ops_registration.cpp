// The library ottt_cuda with the op schemas of csrc/op_schemas.h (the CPU and
// CUDA implementations register themselves in csrc/cpu and csrc/cuda), and the
// pybind11 module `ottt_cuda._C`, which reports how it was built and holds
// `_C.fast`, the ops without torch.ops' boxed call (csrc/fast_calls.cpp).
// Autograd and fake kernels are registered from Python
// (ottt_cuda/_registration.py).
#include <torch/extension.h>
#include <torch/library.h>

#include "op_schemas.h"

TORCH_LIBRARY(ottt_cuda, m) { ottt::define_ops(m); }

namespace ottt {
void register_fast_calls(pybind11::module_& parent);  // csrc/fast_calls.cpp
void register_ws_cpu(pybind11::module_& m);  // csrc/cpu/ws_cpu.cpp
const char* cpu_vector_isa();  // csrc/cpu/lif_step_cpu.cpp
}  // namespace ottt

namespace {
pybind11::dict build_info() {
  pybind11::dict d;
#ifdef OTTT_TORCH_VERSION
  d["torch_version"] = OTTT_TORCH_VERSION;  // set by setup.py / CMake
#else
  d["torch_version"] = "unknown";
#endif
#ifdef OTTT_WITH_CUDA
  d["cuda_compiled"] = true;
#ifdef OTTT_CUDA_ARCHS
  d["cuda_archs"] = OTTT_CUDA_ARCHS;
#else
  d["cuda_archs"] = "";
#endif
#else
  d["cuda_compiled"] = false;
  d["cuda_archs"] = "";
#endif
  d["cpu_compiled"] = true;
  d["cpu_vector_isa"] = ottt::cpu_vector_isa();
#ifdef _OPENMP
  d["openmp"] = true;
#else
  d["openmp"] = false;
#endif
  return d;
}
}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "ottt_cuda compiled kernels; the ops themselves live in torch.ops.ottt_cuda";
  m.def("build_info", &build_info, "How this extension was built");
  ottt::register_fast_calls(m);
  ottt::register_ws_cpu(m);
}
