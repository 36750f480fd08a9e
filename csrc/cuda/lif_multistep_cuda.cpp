// CUDA launch code of the multi-step LIF op: the tensor handling of
// csrc/cpu/lif_multistep_cpu.cpp, with the per-neuron time loops run by the
// kernels of lif_multistep_kernels.cu.
#include <torch/library.h>

#include "host_utils.h"

namespace ottt {
namespace {

void check_seq(const at::Tensor& x_seq, const char* name) {
  TORCH_CHECK(x_seq.dim() >= 1, name, " must have a leading time dimension [T, ...], got a 0-d tensor");
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> lif_multistep_fwd_cuda(
    const at::Tensor& x_in, const c10::optional<at::Tensor>& v0_in, double tau, double v_th,
    c10::optional<double> v_reset, bool decay_input, c10::string_view surrogate, double alpha,
    bool save_h) {
  check_float(x_in, "x_seq");
  check_seq(x_in, "x_seq");
  check_neuron_args(tau, alpha);
  parse_surrogate(std::string(surrogate));
  const at::Tensor x = x_in.contiguous();
  const at::Tensor v0 = contiguous_or_undefined(v0_in);
  const int64_t T = x.size(0);
  const int64_t n = T == 0 ? 0 : x.numel() / T;
  const auto step_sizes = x.sizes().slice(1);
  if (v0.defined()) {
    TORCH_CHECK(v0.sizes() == step_sizes, "v0 must have the shape of one step of x_seq ", step_sizes,
                ", got ", v0.sizes());
    TORCH_CHECK(v0.scalar_type() == x.scalar_type() && v0.device() == x.device(),
                "v0 must have the dtype and device of x_seq");
  }
  check_cuda(x, "x_seq");
  const c10::cuda::CUDAGuard guard(x.device());
  at::Tensor spike = at::empty_like(x);
  // With T = 0 the last membrane is the initial one.
  at::Tensor v_last = T > 0 ? at::empty(step_sizes, x.options())
                            : (v0.defined() ? v0.clone() : at::zeros(step_sizes, x.options()));
  at::Tensor h_seq = save_h ? at::empty_like(x) : at::empty({0}, x.options());
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
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {spike, v_last, h_seq};
}

std::tuple<at::Tensor, at::Tensor> lif_multistep_bwd_cuda(
    const at::Tensor& grad_in, const c10::optional<at::Tensor>& grad_v_last_in,
    const at::Tensor& h_in, double tau, double v_th, c10::optional<double> v_reset, bool decay_input,
    c10::string_view surrogate, double alpha) {
  check_neuron_args(tau, alpha);
  check_seq(h_in, "h_seq");
  const Surrogate kind = parse_surrogate(std::string(surrogate));
  const at::Tensor h = h_in.contiguous();
  const at::Tensor g = grad_in.contiguous();
  check_like(g, "grad_spike_seq", h, "h_seq");
  const at::Tensor gvl = contiguous_or_undefined(grad_v_last_in);
  const int64_t T = h.size(0);
  const int64_t n = T == 0 ? 0 : h.numel() / T;
  const auto step_sizes = h.sizes().slice(1);
  if (gvl.defined()) {
    TORCH_CHECK(gvl.sizes() == step_sizes, "grad_v_last must have the shape of one step ", step_sizes,
                ", got ", gvl.sizes());
    // The CPU kernel would fail in data_ptr on a dtype mismatch; here a
    // pointer from another device must never reach a kernel.
    TORCH_CHECK(gvl.scalar_type() == h.scalar_type() && gvl.device() == h.device(),
                "grad_v_last must have the dtype and device of h_seq");
  }
  check_cuda(h, "h_seq");
  const c10::cuda::CUDAGuard guard(h.device());
  at::Tensor grad_x = at::empty_like(h);
  at::Tensor grad_v0 = T == 0 && gvl.defined() ? gvl.clone() : at::empty(step_sizes, h.options());

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, h.scalar_type(), "lif_multistep_bwd_cuda", [&] {
    assert_same_opmath<scalar_t>();
    if (T == 0) {
      if (!gvl.defined()) grad_v0.zero_();
      return;
    }
    if (n == 0) return;
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
    gpu::launch_lif_multistep_bwd<scalar_t>(args, current_stream());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {grad_x, grad_v0};
}

}  // namespace

TORCH_LIBRARY_IMPL(ottt_cuda, CUDA, m) {
  m.impl("lif_multistep_fwd", &lif_multistep_fwd_cuda);
  m.impl("lif_multistep_bwd", &lif_multistep_bwd_cuda);
}

}  // namespace ottt
