// CPU kernels of the single-step LIF op (forward and surrogate backward).
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "../op_inputs.h"
#include "dispatch_flags.h"
#include "sigmoid_bwd_avx512.h"
#include "surrogate_avx2.h"  // last: it includes ATen/cpu/vec for AVX2 (see there)

namespace ottt {
namespace {

constexpr int64_t kGrain = 32768;

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> lif_step_fwd_cpu(
    const at::Tensor& x_in, const c10::optional<at::Tensor>& v_in,
    const c10::optional<at::Tensor>& trace_in, const c10::optional<at::Tensor>& mask_in,
    double tau, double v_th, c10::optional<double> v_reset, bool decay_input, double trace_decay,
    c10::string_view surrogate, double alpha, bool save_h) {
  const LifStepFwd t = prepare_lif_step_fwd(x_in, v_in, trace_in, mask_in, tau, surrogate, alpha, save_h);
  const at::Tensor &x = t.x, &v = t.v, &tr = t.trace, &mask = t.mask;
  const at::Tensor &spike = t.spike, &v_next = t.v_next, &h_out = t.z, &tr_next = t.trace_next;
  const int64_t n = x.numel();

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "lif_step_fwd_cpu", [&] {
    using opmath_t = at::opmath_type<scalar_t>;
    const auto c = coeffs_from_args<opmath_t>(tau, v_th, v_reset, decay_input);
    const opmath_t td = static_cast<opmath_t>(trace_decay);
    const scalar_t* xp = x.data_ptr<scalar_t>();
    const scalar_t* vp = v.defined() ? v.data_ptr<scalar_t>() : nullptr;
    const scalar_t* tp = tr.defined() ? tr.data_ptr<scalar_t>() : nullptr;
    const scalar_t* mp = mask.defined() ? mask.data_ptr<scalar_t>() : nullptr;
    scalar_t* sp = spike.data_ptr<scalar_t>();
    scalar_t* vnp = v_next.data_ptr<scalar_t>();
    scalar_t* zp = save_h ? h_out.data_ptr<scalar_t>() : nullptr;
    scalar_t* tnp = tp ? tr_next.data_ptr<scalar_t>() : nullptr;
    // The optional inputs/outputs become template flags, so each variant's
    // loop has no per-element branches and the compiler can vectorize it.
    dispatch_flags(vp != nullptr, mp != nullptr, tp != nullptr, zp != nullptr,
                   [&](auto has_v, auto has_mask, auto has_trace, auto save_z) {
      at::parallel_for(0, n, kGrain, [&](int64_t begin, int64_t end) {
        const auto cc = c;  // a local copy: stores through scalar_t* cannot alias it
        // The outputs are new tensors (prepare_lif_step_fwd): no store aliases a load. Without
        // telling the compiler so, it must check at run time, and with the trace (3 inputs, 3-4
        // outputs) there are more pointer pairs than GCC versions a loop for: the loop stayed
        // scalar, 3x slower than the same step without the trace.
        _Pragma("GCC ivdep")  // (_Pragma: this code is inside the AT_DISPATCH macro)
        for (int64_t i = begin; i < end; ++i) {
          const opmath_t h = charge(cc, has_v ? opmath_t(vp[i]) : opmath_t(0), opmath_t(xp[i]));
          const opmath_t s = fire(cc, h);
          vnp[i] = static_cast<scalar_t>(reset(cc, h, s));
          const opmath_t out = has_mask ? s * opmath_t(mp[i]) : s;
          sp[i] = static_cast<scalar_t>(out);
          if (save_z) zp[i] = static_cast<scalar_t>(h - cc.v_th);
          if (has_trace) tnp[i] = static_cast<scalar_t>(trace_step(opmath_t(tp[i]), out, td));
        }
      });
    });
  });
  return {spike, v_next, h_out, tr_next};
}

at::Tensor lif_step_bwd_cpu(const at::Tensor& grad_in, const at::Tensor& h_in,
                            const c10::optional<at::Tensor>& mask_in, double tau, double /*v_th*/,
                            bool decay_input, c10::string_view surrogate, double alpha) {
  const LifStepBwd t = prepare_lif_step_bwd(grad_in, h_in, mask_in, tau, surrogate, alpha);
  const at::Tensor &h = t.z, &g = t.grad_spike, &mask = t.mask, &grad_x = t.grad_x;
  const Surrogate kind = t.kind;
  const int64_t n = h.numel();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, h.scalar_type(), "lif_step_bwd_cpu", [&] {
    using opmath_t = at::opmath_type<scalar_t>;
    const opmath_t in_scale = static_cast<opmath_t>(decay_input ? 1.0 / tau : 1.0);
    const opmath_t al = static_cast<opmath_t>(alpha);
    const scalar_t* zp = h.data_ptr<scalar_t>();
    const scalar_t* gp = g.data_ptr<scalar_t>();
    const scalar_t* mp = mask.defined() ? mask.data_ptr<scalar_t>() : nullptr;
    scalar_t* op = grad_x.data_ptr<scalar_t>();
    dispatch_bool(mp != nullptr, [&](auto has_mask) {
      dispatch_surrogate(kind, [&](auto K) {
#if OTTT_HAVE_AVX2_PATH
        // float/double on an AVX2 CPU: the vector loop (exp included); fp16/bf16
        // keep the scalar loop below, which widens to float per element.
        if constexpr (std::is_same_v<scalar_t, opmath_t>) {
          if (has_avx2_fma()) {
#if OTTT_HAVE_AVX512_SIGMOID
            // float32 sigmoid on an AVX-512 CPU: 16 lanes (see sigmoid_bwd_avx512.h for why only this case).
            if constexpr (K.value == Surrogate::Sigmoid && std::is_same_v<scalar_t, float>) {
              if (has_avx512_vec()) {
                at::parallel_for(0, n, kGrain, [&](int64_t begin, int64_t end) {
                  avx512::sigmoid_bwd_f32(zp, gp, has_mask.value ? mp : nullptr, op, al, in_scale, begin, end);
                });
                return;
              }
            }
#endif
            at::parallel_for(0, n, kGrain, [&](int64_t begin, int64_t end) {
              avx2::lif_step_bwd_range<K.value, has_mask.value, scalar_t>(zp, gp, mp, op, al, in_scale, begin, end);
            });
            return;
          }
        }
#endif
        at::parallel_for(0, n, kGrain, [&](int64_t begin, int64_t end) {
          for (int64_t i = begin; i < end; ++i) {
            opmath_t gs = opmath_t(gp[i]);
            if (has_mask) gs *= opmath_t(mp[i]);
            op[i] = static_cast<scalar_t>(gs * surrogate_grad(K.value, opmath_t(zp[i]), al) * in_scale);
          }
        });
      });
    });
  });
  return grad_x;
}

}  // namespace

// The widest vector loop the surrogate backward takes here, for build_info (bug reports; the tests
// that compare the paths): "avx512" (the float32 sigmoid backward: AVX-512 F/DQ/BW/VL), "avx2"
// (every surrogate backward), or "scalar" (what the compiler vectorized alone). outer_accumulate_'s
// small-batch AVX-512 loop needs F only (has_avx512f), so an F-without-BW CPU runs it under "avx2".
const char* cpu_vector_isa() {
#if OTTT_HAVE_AVX2_PATH
  if (has_avx2_fma()) {
#if OTTT_HAVE_AVX512_SIGMOID
    if (has_avx512_vec()) return "avx512";
#endif
    return "avx2";
  }
#endif
  return "scalar";
}

TORCH_LIBRARY_IMPL(ottt_cuda, CPU, m) {
  m.impl("lif_step_fwd", &lif_step_fwd_cpu);
  m.impl("lif_step_bwd", &lif_step_bwd_cpu);
}

}  // namespace ottt
