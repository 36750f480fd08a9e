// The op schemas, written once. The compiled extension declares them in the
// library ottt_cuda (csrc/ops_registration.cpp), the emulated-CUDA extension in
// ottt_cuda_emu (csrc/cuda_emu/emu_module.cpp); each backend registers its
// kernels against these.
//
// Mutated arguments are marked (a!) so that functionalization/torch.compile
// treat the in-place ops correctly.
#pragma once

#include <torch/library.h>

namespace ottt {

inline void define_ops(torch::Library& m) {
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
  // carried so that autograd hands it to lif_multistep_bwd.
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

}  // namespace ottt
