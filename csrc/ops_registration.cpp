// The op schemas, declared once for every backend (the CPU and CUDA
// implementations register themselves in csrc/cpu and csrc/cuda), and the
// pybind11 module `ottt_cuda._C`, which reports how it was built and holds
// `_C.fast`, the ops without torch.ops' boxed call (csrc/fast_calls.cpp).
//
// Mutated arguments are marked (a!) so that functionalization/torch.compile
// treat the in-place ops correctly. Autograd and fake kernels are registered
// from Python (ottt_cuda/_registration.py).
#include <torch/extension.h>
#include <torch/library.h>

TORCH_LIBRARY(ottt_cuda, m) {
  // One LIF time step. Returns (spike, v_next, z, trace_next); z = h - v_th is
  // the charged membrane measured from threshold, saved for the surrogate
  // backward (empty unless save_h; see fire_from_z in ottt_math.h for why z and
  // not h), trace_next is empty unless a trace is given.
  m.def(
      "lif_step_fwd(Tensor x, Tensor? v, Tensor? trace, Tensor? mask, float tau, float v_th, "
      "float? v_reset, bool decay_input, float trace_decay, str surrogate, float alpha, bool save_h) "
      "-> (Tensor, Tensor, Tensor, Tensor)");
  // grad_x = grad_spike * mask * sg(z) * in_scale. (v_th is unused: z already holds h - v_th.)
  m.def(
      "lif_step_bwd(Tensor grad_spike, Tensor h, Tensor? mask, float tau, float v_th, "
      "bool decay_input, str surrogate, float alpha) -> Tensor");
  // All T steps of x_seq [T, ...]. Returns (spike_seq, v_last, z_seq), z = h - v_th;
  // z_seq is empty unless save_h. detach_reset does not change the forward: it is
  // carried so that autograd hands it to lif_multistep_bwd. It comes last, with a
  // default, so callers written before it keep working.
  m.def(
      "lif_multistep_fwd(Tensor x_seq, Tensor? v0, float tau, float v_th, float? v_reset, "
      "bool decay_input, str surrogate, float alpha, bool save_h, bool detach_reset=True) "
      "-> (Tensor, Tensor, Tensor)");
  // Reverse-time BPTT recurrence, the reset detached (dv/dh = 1, or 1 - s for a hard
  // reset) unless detach_reset=False (then also through the spike: 1 - v_th sg(z), or
  // (1 - s) + (v_reset - h) sg(z)). Returns (grad_x_seq, grad_v0).
  m.def(
      "lif_multistep_bwd(Tensor grad_spike_seq, Tensor? grad_v_last, Tensor h_seq, float tau, "
      "float v_th, float? v_reset, bool decay_input, str surrogate, float alpha, bool detach_reset=True) "
      "-> (Tensor, Tensor)");
  m.def("trace_update(Tensor? trace, Tensor s, float decay) -> Tensor");
  m.def("trace_update_(Tensor(a!) trace, Tensor s, float decay) -> ()");
  // grad_w [out, in] += alpha * g[N, out]^T a[N, in], accumulated in grad_w's dtype.
  m.def("outer_accumulate_(Tensor(a!) grad_w, Tensor g, Tensor a, float alpha) -> ()");
}

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
