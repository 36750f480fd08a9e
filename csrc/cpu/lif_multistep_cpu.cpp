// CPU kernels of the multi-step LIF op: all T steps per neuron in one pass
// (forward), and the reverse-time BPTT recurrence, with the reset detached or
// (detach_reset=False) back-propagated through (backward). Neurons are independent, so the parallel loop is over neurons
// and the time loop runs inside it.
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <type_traits>
#include <vector>

#include "../op_inputs.h"
#include "dispatch_flags.h"

namespace ottt {
namespace {

constexpr int64_t kGrain = 4096;

std::tuple<at::Tensor, at::Tensor, at::Tensor> lif_multistep_fwd_cpu(
    const at::Tensor& x_in, const c10::optional<at::Tensor>& v0_in, double tau, double v_th,
    c10::optional<double> v_reset, bool decay_input, c10::string_view surrogate, double alpha,
    bool save_h, bool /*detach_reset: backward only*/) {
  const LifMultistepFwd r = prepare_lif_multistep_fwd(x_in, v0_in, tau, surrogate, alpha, save_h);
  const at::Tensor &x = r.x, &v0 = r.v0, &spike = r.spike, &v_last = r.v_last, &h_seq = r.z;
  const int64_t T = r.steps, n = r.n;

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "lif_multistep_fwd_cpu", [&] {
    using opmath_t = at::opmath_type<scalar_t>;
    const auto c = coeffs_from_args<opmath_t>(tau, v_th, v_reset, decay_input);
    const scalar_t* xp = x.data_ptr<scalar_t>();
    const scalar_t* v0p = v0.defined() ? v0.data_ptr<scalar_t>() : nullptr;
    scalar_t* sp = spike.data_ptr<scalar_t>();
    scalar_t* zp = save_h ? h_seq.data_ptr<scalar_t>() : nullptr;
    scalar_t* vlp = v_last.data_ptr<scalar_t>();
    if (T == 0) return;
    // Time outer, neurons inner: each thread keeps its block's membranes in a
    // small buffer, so the inner loop runs over contiguous neurons and
    // vectorizes (save_z is a compile-time flag for the same reason).
    auto run = [&](auto save_z) {
      at::parallel_for(0, n, kGrain, [&](int64_t begin, int64_t end) {
        const auto cc = c;
        const int64_t len = end - begin;
        std::vector<opmath_t> v(len);
        for (int64_t i = 0; i < len; ++i) v[i] = v0p ? opmath_t(v0p[begin + i]) : opmath_t(0);
        for (int64_t t = 0; t < T; ++t) {
          const scalar_t* xt = xp + t * n + begin;
          scalar_t* st = sp + t * n + begin;
          scalar_t* zt = save_z ? zp + t * n + begin : nullptr;
          for (int64_t i = 0; i < len; ++i) {
            const opmath_t h = charge(cc, v[i], opmath_t(xt[i]));
            const opmath_t s = fire(cc, h);
            v[i] = reset(cc, h, s);
            st[i] = static_cast<scalar_t>(s);
            if (save_z) zt[i] = static_cast<scalar_t>(h - cc.v_th);
          }
        }
        for (int64_t i = 0; i < len; ++i) vlp[begin + i] = static_cast<scalar_t>(v[i]);
      });
    };
    dispatch_bool(zp != nullptr, run);
  });
  return {spike, v_last, h_seq};
}

std::tuple<at::Tensor, at::Tensor> lif_multistep_bwd_cpu(
    const at::Tensor& grad_in, const c10::optional<at::Tensor>& grad_v_last_in,
    const at::Tensor& h_in, double tau, double v_th, c10::optional<double> v_reset, bool decay_input,
    c10::string_view surrogate, double alpha, bool detach_reset) {
  const LifMultistepBwd r = prepare_lif_multistep_bwd(grad_in, grad_v_last_in, h_in, tau, surrogate, alpha);
  const at::Tensor &h = r.z, &g = r.grad_spike, &gvl = r.grad_v_last, &grad_x = r.grad_x, &grad_v0 = r.grad_v0;
  const int64_t T = r.steps, n = r.n;
  const Surrogate kind = r.kind;

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, h.scalar_type(), "lif_multistep_bwd_cpu", [&] {
    using opmath_t = at::opmath_type<scalar_t>;
    const auto c = coeffs_from_args<opmath_t>(tau, v_th, v_reset, decay_input);
    const opmath_t al = static_cast<opmath_t>(alpha);
    const scalar_t* zp = h.data_ptr<scalar_t>();
    const scalar_t* gp = g.data_ptr<scalar_t>();
    const scalar_t* gvlp = gvl.defined() ? gvl.data_ptr<scalar_t>() : nullptr;
    scalar_t* gxp = grad_x.data_ptr<scalar_t>();
    scalar_t* gv0p = grad_v0.data_ptr<scalar_t>();
    if (T == 0) return;  // grad_v0 was prepared: grad_v_last or zeros
    // Reverse time outer, neurons inner, as in the forward; the surrogate and
    // detach_reset are compile-time so the inner loop has no branch on them.
    dispatch_surrogate(kind, [&](auto K) {
    dispatch_bool(detach_reset, [&](auto detached) {
    at::parallel_for(0, n, kGrain, [&](int64_t begin, int64_t end) {
      const auto cc = c;
      const int64_t len = end - begin;
      // grad_v[i]: dL/dv[t] of neuron i, flowing back from step t+1 (from v_last at t = T-1).
      std::vector<opmath_t> grad_v(len);
      for (int64_t i = 0; i < len; ++i) grad_v[i] = gvlp ? opmath_t(gvlp[begin + i]) : opmath_t(0);
      for (int64_t t = T - 1; t >= 0; --t) {
        const scalar_t* zt = zp + t * n + begin;
        const scalar_t* gt = gp + t * n + begin;
        scalar_t* gxt = gxp + t * n + begin;
        for (int64_t i = 0; i < len; ++i) {
          const opmath_t z = opmath_t(zt[i]);
          const opmath_t sg = surrogate_grad(K.value, z, al);
          const opmath_t dv_dh = detached ? dreset_dh(cc, fire_from_z(z)) : dreset_dh_attached(cc, z, sg);
          const opmath_t grad_h = opmath_t(gt[i]) * sg + grad_v[i] * dv_dh;
          gxt[i] = static_cast<scalar_t>(grad_h * cc.in_scale);
          grad_v[i] = grad_h * cc.decay;
        }
      }
      for (int64_t i = 0; i < len; ++i) gv0p[begin + i] = static_cast<scalar_t>(grad_v[i]);
    });
    });
    });
  });
  return {grad_x, grad_v0};
}

}  // namespace

TORCH_LIBRARY_IMPL(ottt_cuda, CPU, m) {
  m.impl("lif_multistep_fwd", &lif_multistep_fwd_cpu);
  m.impl("lif_multistep_bwd", &lif_multistep_bwd_cpu);
}

}  // namespace ottt
