// CUDA launch code of the multi-step LIF op: the tensor handling of
// csrc/cpu/lif_multistep_cpu.cpp, with the per-neuron time loops run by the
// kernels of lif_multistep_kernels.cu.
#include <torch/library.h>

#include "host_utils.h"

namespace ottt {
namespace {

std::tuple<at::Tensor, at::Tensor, at::Tensor> lif_multistep_fwd_cuda(
    const at::Tensor& x_in, const c10::optional<at::Tensor>& v0_in, double tau, double v_th,
    c10::optional<double> v_reset, bool decay_input, c10::string_view surrogate, double alpha,
    bool save_h, bool /*detach_reset: backward only*/) {
  const LifMultistepFwd r = prepare_lif_multistep_fwd(x_in, v0_in, tau, surrogate, alpha, save_h);
  const at::Tensor &x = r.x, &v0 = r.v0, &spike = r.spike, &v_last = r.v_last, &h_seq = r.z;
  const int64_t T = r.steps, n = r.n;
  check_cuda(x, "x_seq");
  const DeviceGuard guard(x.device());
  if (T == 0 || n == 0) return {spike, v_last, h_seq};

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "lif_multistep_fwd_cuda", [&] {
    assert_same_opmath<scalar_t>();
    using opmath_t = at::opmath_type<scalar_t>;
    gpu::LifMultistepFwdArgs<scalar_t> args;
    args.x = x.data_ptr<scalar_t>();
    args.v0 = ptr_or_null<scalar_t>(v0);
    args.spike = spike.data_ptr<scalar_t>();
    args.z_seq = save_h ? h_seq.data_ptr<scalar_t>() : nullptr;
    args.v_last = v_last.data_ptr<scalar_t>();
    args.steps = T;
    args.n = n;
    args.c = coeffs_from_args<opmath_t>(tau, v_th, v_reset, decay_input);
    gpu::launch_lif_multistep_fwd<scalar_t>(args, current_stream());
    OTTT_KERNEL_LAUNCH_CHECK();
  });
  return {spike, v_last, h_seq};
}

std::tuple<at::Tensor, at::Tensor> lif_multistep_bwd_cuda(
    const at::Tensor& grad_in, const c10::optional<at::Tensor>& grad_v_last_in,
    const at::Tensor& h_in, double tau, double v_th, c10::optional<double> v_reset, bool decay_input,
    c10::string_view surrogate, double alpha, bool detach_reset) {
  const LifMultistepBwd r = prepare_lif_multistep_bwd(grad_in, grad_v_last_in, h_in, tau, surrogate, alpha);
  const at::Tensor &h = r.z, &g = r.grad_spike, &gvl = r.grad_v_last, &grad_x = r.grad_x, &grad_v0 = r.grad_v0;
  const int64_t T = r.steps, n = r.n;
  const Surrogate kind = r.kind;
  check_cuda(h, "h_seq");
  const DeviceGuard guard(h.device());

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, h.scalar_type(), "lif_multistep_bwd_cuda", [&] {
    assert_same_opmath<scalar_t>();
    if (T == 0 || n == 0) return;  // grad_v0 was prepared for T = 0: grad_v_last or zeros
    using opmath_t = at::opmath_type<scalar_t>;
    gpu::LifMultistepBwdArgs<scalar_t> args;
    args.grad_spike = g.data_ptr<scalar_t>();
    args.grad_v_last = ptr_or_null<scalar_t>(gvl);
    args.z_seq = h.data_ptr<scalar_t>();  // h_seq holds z = h - v_th (see the schema)
    args.grad_x = grad_x.data_ptr<scalar_t>();
    args.grad_v0 = grad_v0.data_ptr<scalar_t>();
    args.steps = T;
    args.n = n;
    args.c = coeffs_from_args<opmath_t>(tau, v_th, v_reset, decay_input);
    args.kind = kind;
    args.alpha = static_cast<opmath_t>(alpha);
    args.detach_reset = detach_reset;
    gpu::launch_lif_multistep_bwd<scalar_t>(args, current_stream());
    OTTT_KERNEL_LAUNCH_CHECK();
  });
  return {grad_x, grad_v0};
}

}  // namespace

OTTT_CUDA_LIBRARY_IMPL(m) {
  m.impl("lif_multistep_fwd", &lif_multistep_fwd_cuda);
  m.impl("lif_multistep_bwd", &lif_multistep_bwd_cuda);
}

}  // namespace ottt
