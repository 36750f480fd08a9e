// CUDA launch code of the single-step LIF op (forward and surrogate
// backward): the tensor handling of csrc/cpu/lif_step_cpu.cpp, with the loops
// replaced by the kernels of lif_step_kernels.cu.
#include <torch/library.h>

#include "host_utils.h"

namespace ottt {
namespace {

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> lif_step_fwd_cuda(
    const at::Tensor& x_in, const c10::optional<at::Tensor>& v_in,
    const c10::optional<at::Tensor>& trace_in, const c10::optional<at::Tensor>& mask_in,
    double tau, double v_th, c10::optional<double> v_reset, bool decay_input, double trace_decay,
    c10::string_view surrogate, double alpha, bool save_h) {
  const LifStepFwd t = prepare_lif_step_fwd(x_in, v_in, trace_in, mask_in, tau, surrogate, alpha, save_h);
  const at::Tensor &x = t.x, &v = t.v, &tr = t.trace, &mask = t.mask;
  const at::Tensor &spike = t.spike, &v_next = t.v_next, &h_out = t.z, &tr_next = t.trace_next;
  check_cuda(x, "x");
  const DeviceGuard guard(x.device());
  const int64_t n = x.numel();
  if (n == 0) return {spike, v_next, h_out, tr_next};

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "lif_step_fwd_cuda", [&] {
    assert_same_opmath<scalar_t>();
    using opmath_t = at::opmath_type<scalar_t>;
    gpu::LifStepFwdArgs<scalar_t> args;
    args.x = x.data_ptr<scalar_t>();
    args.v = ptr_or_null<scalar_t>(v);
    args.trace = ptr_or_null<scalar_t>(tr);
    args.mask = ptr_or_null<scalar_t>(mask);
    args.spike = spike.data_ptr<scalar_t>();
    args.v_next = v_next.data_ptr<scalar_t>();
    args.z = save_h ? h_out.data_ptr<scalar_t>() : nullptr;
    args.trace_next = tr.defined() ? tr_next.data_ptr<scalar_t>() : nullptr;
    args.n = n;
    args.c = coeffs_from_args<opmath_t>(tau, v_th, v_reset, decay_input);
    args.trace_decay = static_cast<opmath_t>(trace_decay);
    gpu::launch_lif_step_fwd<scalar_t>(args, current_stream());
    OTTT_KERNEL_LAUNCH_CHECK();
  });
  return {spike, v_next, h_out, tr_next};
}

at::Tensor lif_step_bwd_cuda(const at::Tensor& grad_in, const at::Tensor& h_in,
                             const c10::optional<at::Tensor>& mask_in, double tau, double /*v_th*/,
                             bool decay_input, c10::string_view surrogate, double alpha) {
  const LifStepBwd t = prepare_lif_step_bwd(grad_in, h_in, mask_in, tau, surrogate, alpha);
  const at::Tensor &h = t.z, &g = t.grad_spike, &mask = t.mask, &grad_x = t.grad_x;
  const Surrogate kind = t.kind;
  check_cuda(h, "h");
  const DeviceGuard guard(h.device());
  const int64_t n = h.numel();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, h.scalar_type(), "lif_step_bwd_cuda", [&] {
    assert_same_opmath<scalar_t>();
    using opmath_t = at::opmath_type<scalar_t>;
    if (n == 0) return;
    gpu::LifStepBwdArgs<scalar_t> args;
    args.grad_spike = g.data_ptr<scalar_t>();
    args.z = h.data_ptr<scalar_t>();  // h_in holds z = h - v_th (see the schema)
    args.mask = ptr_or_null<scalar_t>(mask);
    args.grad_x = grad_x.data_ptr<scalar_t>();
    args.n = n;
    args.kind = kind;
    args.alpha = static_cast<opmath_t>(alpha);
    args.in_scale = static_cast<opmath_t>(decay_input ? 1.0 / tau : 1.0);
    gpu::launch_lif_step_bwd<scalar_t>(args, current_stream());
    OTTT_KERNEL_LAUNCH_CHECK();
  });
  return grad_x;
}

}  // namespace

OTTT_CUDA_LIBRARY_IMPL(m) {
  m.impl("lif_step_fwd", &lif_step_fwd_cuda);
  m.impl("lif_step_bwd", &lif_step_bwd_cuda);
}

}  // namespace ottt
