// What the CPU and CUDA launch code of each op share: the argument checks,
// the contiguous views of the inputs (any strides are accepted) and the
// allocation of the outputs. Each backend then runs only its loops/kernels
// on the prepared buffers.
#pragma once

#include "common.h"

namespace ottt {

inline at::Tensor empty0(const at::Tensor& like) { return at::empty({0}, like.options()); }

inline void check_seq(const at::Tensor& seq, const char* name) {
  TORCH_CHECK_VALUE(seq.dim() >= 1, name, " must have a leading time dimension [T, ...], got a 0-d tensor");
}

// A per-step tensor (v0, grad_v_last) beside a sequence [T, ...].
inline void check_step_of(const at::Tensor& t, const char* name, const at::Tensor& seq, const char* seq_name) {
  TORCH_CHECK_VALUE(t.sizes() == seq.sizes().slice(1), name, " must have the shape of one step of ", seq_name,
                    " ", seq.sizes().slice(1), ", got ", t.sizes());
  TORCH_CHECK_VALUE(t.device() == seq.device(), name, " must be on the device of ", seq_name, " (", seq.device(),
                    "), got ", t.device());
  TORCH_CHECK_TYPE(t.scalar_type() == seq.scalar_type(), name, " must have the dtype of ", seq_name, " (",
                   seq.scalar_type(), "), got ", t.scalar_type());
}

struct LifStepFwd {
  at::Tensor x, v, trace, mask;          // inputs (v, trace, mask may be undefined)
  at::Tensor spike, v_next, z, trace_next;  // outputs (z, trace_next empty when not asked for)
};

inline LifStepFwd prepare_lif_step_fwd(const at::Tensor& x_in, const c10::optional<at::Tensor>& v_in,
                                       const c10::optional<at::Tensor>& trace_in,
                                       const c10::optional<at::Tensor>& mask_in, double tau,
                                       c10::string_view surrogate, double alpha, bool save_z) {
  check_float(x_in, "x");
  check_neuron_args(tau, alpha);
  parse_surrogate(std::string(surrogate));
  LifStepFwd r;
  r.x = x_in.contiguous();
  r.v = contiguous_or_undefined(v_in);
  r.trace = contiguous_or_undefined(trace_in);
  r.mask = contiguous_or_undefined(mask_in);
  if (r.v.defined()) check_like(r.v, "v", r.x, "x");
  if (r.trace.defined()) check_like(r.trace, "trace", r.x, "x");
  if (r.mask.defined()) check_like(r.mask, "mask", r.x, "x");
  r.spike = at::empty_like(r.x);
  r.v_next = at::empty_like(r.x);
  r.z = save_z ? at::empty_like(r.x) : empty0(r.x);
  r.trace_next = r.trace.defined() ? at::empty_like(r.x) : empty0(r.x);
  return r;
}

struct LifStepBwd {
  at::Tensor grad_spike, z, mask, grad_x;
  Surrogate kind;
};

inline LifStepBwd prepare_lif_step_bwd(const at::Tensor& grad_in, const at::Tensor& z_in,
                                       const c10::optional<at::Tensor>& mask_in, double tau,
                                       c10::string_view surrogate, double alpha) {
  check_neuron_args(tau, alpha);
  LifStepBwd r;
  r.kind = parse_surrogate(std::string(surrogate));
  r.z = z_in.contiguous();
  r.grad_spike = grad_in.contiguous();
  r.mask = contiguous_or_undefined(mask_in);
  check_like(r.grad_spike, "grad_spike", r.z, "h");
  if (r.mask.defined()) check_like(r.mask, "mask", r.z, "h");
  r.grad_x = at::empty_like(r.z);
  return r;
}

struct LifMultistepFwd {
  at::Tensor x, v0;               // x [T, ...]; v0 may be undefined
  at::Tensor spike, v_last, z;    // z empty unless asked for
  int64_t steps, n;               // T, and neurons per step
};

inline LifMultistepFwd prepare_lif_multistep_fwd(const at::Tensor& x_in, const c10::optional<at::Tensor>& v0_in,
                                                 double tau, c10::string_view surrogate, double alpha,
                                                 bool save_z) {
  check_float(x_in, "x_seq");
  check_seq(x_in, "x_seq");
  check_neuron_args(tau, alpha);
  parse_surrogate(std::string(surrogate));
  LifMultistepFwd r;
  r.x = x_in.contiguous();
  r.v0 = contiguous_or_undefined(v0_in);
  if (r.v0.defined()) check_step_of(r.v0, "v0", r.x, "x_seq");
  r.steps = r.x.size(0);
  r.n = r.steps == 0 ? 0 : r.x.numel() / r.steps;
  const auto step_sizes = r.x.sizes().slice(1);
  r.spike = at::empty_like(r.x);
  // With T = 0 the last membrane is the initial one.
  r.v_last = r.steps > 0 ? at::empty(step_sizes, r.x.options())
                         : (r.v0.defined() ? r.v0.clone() : at::zeros(step_sizes, r.x.options()));
  r.z = save_z ? at::empty_like(r.x) : empty0(r.x);
  return r;
}

struct LifMultistepBwd {
  at::Tensor grad_spike, grad_v_last, z;  // grad_v_last may be undefined
  at::Tensor grad_x, grad_v0;
  int64_t steps, n;
  Surrogate kind;
};

inline LifMultistepBwd prepare_lif_multistep_bwd(const at::Tensor& grad_in,
                                                 const c10::optional<at::Tensor>& grad_v_last_in,
                                                 const at::Tensor& z_in, double tau, c10::string_view surrogate,
                                                 double alpha) {
  check_neuron_args(tau, alpha);
  check_seq(z_in, "h_seq");
  LifMultistepBwd r;
  r.kind = parse_surrogate(std::string(surrogate));
  r.z = z_in.contiguous();
  r.grad_spike = grad_in.contiguous();
  check_like(r.grad_spike, "grad_spike_seq", r.z, "h_seq");
  r.grad_v_last = contiguous_or_undefined(grad_v_last_in);
  if (r.grad_v_last.defined()) check_step_of(r.grad_v_last, "grad_v_last", r.z, "h_seq");
  r.steps = r.z.size(0);
  r.n = r.steps == 0 ? 0 : r.z.numel() / r.steps;
  r.grad_x = at::empty_like(r.z);
  const auto step_sizes = r.z.sizes().slice(1);
  // With T = 0 the gradient of v0 is that of v_last (v_last is v0).
  if (r.steps == 0)
    r.grad_v0 = r.grad_v_last.defined() ? r.grad_v_last.clone() : at::zeros(step_sizes, r.z.options());
  else
    r.grad_v0 = at::empty(step_sizes, r.z.options());
  return r;
}

// trace_update out of place: `kernel(out, a, s, decay)` computes
// out = decay * a + s over contiguous buffers (a undefined = zeros).
template <typename Kernel>
at::Tensor trace_update_with(const c10::optional<at::Tensor>& trace_in, const at::Tensor& s_in, double decay,
                             Kernel&& kernel) {
  check_float(s_in, "s");
  check_decay(decay, "decay");
  const at::Tensor s = s_in.contiguous();
  const at::Tensor a = contiguous_or_undefined(trace_in);
  if (a.defined()) check_like(a, "trace", s, "s");
  at::Tensor out = at::empty_like(s);
  kernel(out, a, s, decay);
  return out;
}

// trace_update_ in place through the same kernel; a strided trace is computed
// densely, then written back through its strides.
template <typename Kernel>
void trace_update_inplace_with(at::Tensor& trace, const at::Tensor& s_in, double decay, Kernel&& kernel) {
  check_float(trace, "trace");
  check_like(s_in, "s", trace, "trace");
  check_decay(decay, "decay");
  const at::Tensor s = s_in.contiguous();
  if (trace.is_contiguous()) {
    kernel(trace, trace, s, decay);
  } else {
    at::Tensor tmp = trace.contiguous();
    kernel(tmp, tmp, s, decay);
    trace.copy_(tmp);
  }
}

}  // namespace ottt
