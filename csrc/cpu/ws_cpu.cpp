// Scaled weight standardization on the CPU, fused row by row: ottt_cuda._C.ws_forward_cpu
// (W_hat and the row statistics) and ws_backward_cpu, called by ottt_cuda/nn/ws.py
// (_standardized_and_stats, standardize_backward) for contiguous float32/float64 CPU
// weights; elsewhere ws.py keeps its torch expressions, which these must equal up to
// rounding (tests/test_ws_cpu.py).
//
// Forward, per row: mean = mean_row(W), scale = sqrt(sum_row((W - mean)^2) / (n - 1) * n + eps),
// W_hat = (W - mean) * gain / scale: the torch expression makes 4 passes over the weight
// (0.29 ms at 400 x 784), this one reads each row from memory once.
//
// Backward:
// With x_hat = (W - mean) / scale per row, R = sum_row(grad * x_hat), p = gain / scale
// (1 / scale without a gain) and k = n / (n - 1):
//     c = p grad - k R p / scale (W - mean),   dL/dW = c - mean_row(c),   dL/dgain = R.
// The torch expression makes ~7 passes over weight-sized tensors (a centered copy,
// a product, c, its row mean, the subtraction): 0.8 ms for R400's 400 x 784 input
// weight on one core, once per training step, a fifth of a batch-1 step. Here each
// row (a few KB, in L1) is read from memory once and written once: 0.2 ms.
//
// Not a TORCH_LIBRARY op: an internal helper of one Python function, which keeps
// the torch expression for every other device, dtype and layout, and under
// torch.compile.
#include <ATen/Parallel.h>
#include <torch/extension.h>

#include <algorithm>
#include <cmath>
#include <tuple>
#include <vector>

#include "cpu_isa.h"  // has_avx2_fma()

namespace ottt {
namespace {

template <typename scalar_t>
__attribute__((always_inline)) inline void ws_backward_rows(const scalar_t* w, const scalar_t* g, const scalar_t* mean, const scalar_t* scale,
                      const scalar_t* gain, scalar_t* gw, scalar_t* ggain, int64_t n, int64_t r0, int64_t r1) {
  // The row sums in the weight's dtype, in vector lanes (as torch's own sums); the row's coefficients
  // in double. float32 stays in float32 vectors, as the torch expression does.
  const double k = n > 1 ? static_cast<double>(n) / static_cast<double>(n - 1) : std::nan("");
  for (int64_t i = r0; i < r1; ++i) {
    const scalar_t* wr = w + i * n;
    const scalar_t* gr = g + i * n;
    const scalar_t m = mean[i];
    // omp simd: the three row sums may be reassociated into vector lanes (the build has -fopenmp;
    // without it the loop stays correct, in order)
    scalar_t sum_cg = 0, sum_g = 0, sum_c = 0;
#pragma omp simd reduction(+ : sum_cg, sum_g, sum_c)
    for (int64_t j = 0; j < n; ++j) {
      const scalar_t c = wr[j] - m;
      sum_cg += c * gr[j];
      sum_g += gr[j];
      sum_c += c;
    }
    const double sc = scale[i];
    const double r = sum_cg / sc;  // R
    const double p = (gain ? static_cast<double>(gain[i]) : 1.0) / sc;
    const double beta = k * r * p / sc;
    // mean_row(c) = (p sum_g - beta sum_c) / n, subtracted inside the one writing pass
    const scalar_t shift = static_cast<scalar_t>((p * sum_g - beta * sum_c) / static_cast<double>(n));
    const scalar_t ps = static_cast<scalar_t>(p), bs = static_cast<scalar_t>(beta);
    scalar_t* out = gw + i * n;
#pragma omp simd
    for (int64_t j = 0; j < n; ++j) out[j] = ps * gr[j] - bs * (wr[j] - m) - shift;
    if (ggain) ggain[i] = static_cast<scalar_t>(r);
  }
}

template <typename scalar_t>
__attribute__((always_inline)) inline void ws_forward_rows(const scalar_t* w, const scalar_t* gain, double eps,
                                                          scalar_t* out, scalar_t* mean, scalar_t* scale, int64_t n,
                                                          int64_t r0, int64_t r1) {
  for (int64_t i = r0; i < r1; ++i) {
    const scalar_t* wr = w + i * n;
    scalar_t sum = 0;
#pragma omp simd reduction(+ : sum)
    for (int64_t j = 0; j < n; ++j) sum += wr[j];
    const scalar_t m = static_cast<scalar_t>(static_cast<double>(sum) / static_cast<double>(n));
    scalar_t sum_sq = 0;
#pragma omp simd reduction(+ : sum_sq)
    for (int64_t j = 0; j < n; ++j) sum_sq += (wr[j] - m) * (wr[j] - m);
    // the unbiased variance times fan_in, as the torch expression (n = 1: 0 / 0 = NaN, as torch.var)
    const double var_n = static_cast<double>(sum_sq) / static_cast<double>(n - 1) * static_cast<double>(n);
    const double sc = std::sqrt(var_n + eps);
    const scalar_t f = static_cast<scalar_t>((gain ? static_cast<double>(gain[i]) : 1.0) / sc);
    scalar_t* o = out + i * n;
#pragma omp simd
    for (int64_t j = 0; j < n; ++j) o[j] = (wr[j] - m) * f;
    mean[i] = m;
    scale[i] = static_cast<scalar_t>(sc);
  }
}

// The same loops compiled for AVX2 + FMA (8 floats per vector instead of SSE2's 4), chosen at
// run time where the CPU has both, as ATen does for its own kernels.
#if (defined(__GNUC__) || defined(__clang__)) && defined(__x86_64__) && !defined(_MSC_VER)  // as cpu_isa.h
#define OTTT_WS_AVX2 1
template <typename scalar_t>
__attribute__((target("avx2,fma"))) void ws_backward_rows_avx2(const scalar_t* w, const scalar_t* g,
                                                              const scalar_t* mean, const scalar_t* scale,
                                                              const scalar_t* gain, scalar_t* gw, scalar_t* ggain,
                                                              int64_t n, int64_t r0, int64_t r1) {
  ws_backward_rows<scalar_t>(w, g, mean, scale, gain, gw, ggain, n, r0, r1);
}

template <typename scalar_t>
__attribute__((target("avx2,fma"))) void ws_forward_rows_avx2(const scalar_t* w, const scalar_t* gain, double eps,
                                                             scalar_t* out, scalar_t* mean, scalar_t* scale,
                                                             int64_t n, int64_t r0, int64_t r1) {
  ws_forward_rows<scalar_t>(w, gain, eps, out, mean, scale, n, r0, r1);
}
#endif

void check_weight(const at::Tensor& weight) {
  TORCH_CHECK_VALUE(weight.device().is_cpu() && weight.dim() >= 2 && weight.is_contiguous(),
                    "ws_cpu: weight must be a contiguous CPU tensor of 2+ dims");
  TORCH_CHECK_TYPE(weight.scalar_type() == at::kFloat || weight.scalar_type() == at::kDouble,
                   "ws_cpu: float32 or float64 only, got ", weight.scalar_type());
}

at::Tensor row_vector(const at::Tensor& t, const at::Tensor& weight, const char* name) {
  TORCH_CHECK_VALUE(t.device().is_cpu() && t.scalar_type() == weight.scalar_type() && t.numel() == weight.size(0),
                    "ws_cpu: ", name, " must hold one value per row of weight");
  return t.contiguous();
}

int64_t rows_per_task(int64_t n) { return std::max<int64_t>(1, 32768 / std::max<int64_t>(n, 1)); }

// (W_hat, mean, scale), mean and scale shaped [out, 1, ...] like a keepdim reduction.
std::tuple<at::Tensor, at::Tensor, at::Tensor> ws_forward_cpu(const at::Tensor& weight,
                                                              const c10::optional<at::Tensor>& gain, double eps) {
  check_weight(weight);
  const int64_t out = weight.size(0), n = out ? weight.numel() / out : 0;
  std::vector<int64_t> stat_shape(weight.dim(), 1);
  stat_shape[0] = out;
  const at::Tensor gn = gain.has_value() ? row_vector(*gain, weight, "gain") : at::Tensor();
  at::Tensor w_hat = at::empty_like(weight), mean = at::empty(stat_shape, weight.options()),
             scale = at::empty(stat_shape, weight.options());
  if (out == 0 || n == 0) return {w_hat, mean.fill_(NAN), scale.fill_(NAN)};  // means of nothing, as torch's
  AT_DISPATCH_FLOATING_TYPES(weight.scalar_type(), "ws_forward_cpu", [&] {
    const scalar_t* wp = weight.data_ptr<scalar_t>();
    const scalar_t* gp = gn.defined() ? gn.data_ptr<scalar_t>() : nullptr;
    scalar_t *op = w_hat.data_ptr<scalar_t>(), *mp = mean.data_ptr<scalar_t>(), *sp = scale.data_ptr<scalar_t>();
    at::parallel_for(0, out, rows_per_task(n), [&](int64_t r0, int64_t r1) {
#ifdef OTTT_WS_AVX2
      if (has_avx2_fma()) {
        ws_forward_rows_avx2<scalar_t>(wp, gp, eps, op, mp, sp, n, r0, r1);
        return;
      }
#endif
      ws_forward_rows<scalar_t>(wp, gp, eps, op, mp, sp, n, r0, r1);
    });
  });
  return {w_hat, mean, scale};
}

// (grad_weight, grad_gain) for weight [out, ...] (contiguous), gain / mean / scale [out, 1, ...]
// or None for gain, grad like weight. grad_gain is undefined (None) without a gain.
std::tuple<at::Tensor, c10::optional<at::Tensor>> ws_backward_cpu(const at::Tensor& weight,
                                                                   const c10::optional<at::Tensor>& gain,
                                                                   const at::Tensor& mean, const at::Tensor& scale,
                                                                   const at::Tensor& grad) {
  check_weight(weight);
  const int64_t out = weight.size(0), n = out ? weight.numel() / out : 0;
  const at::Tensor m = row_vector(mean, weight, "mean"), s = row_vector(scale, weight, "scale");
  const at::Tensor gn = gain.has_value() ? row_vector(*gain, weight, "gain") : at::Tensor();
  TORCH_CHECK_VALUE(grad.sizes() == weight.sizes() && grad.scalar_type() == weight.scalar_type() &&
                        grad.device().is_cpu(),
                    "ws_cpu: grad must be like weight");
  const at::Tensor g = grad.contiguous();
  at::Tensor gw = at::empty_like(weight);
  at::Tensor ggain = gain.has_value() ? at::empty_like(gn) : at::Tensor();
  if (out == 0 || n == 0) {
    if (ggain.defined()) ggain.zero_();
    return {gw, ggain.defined() ? c10::optional<at::Tensor>(ggain) : c10::nullopt};
  }
  AT_DISPATCH_FLOATING_TYPES(weight.scalar_type(), "ws_backward_cpu", [&] {
    const scalar_t* wp = weight.data_ptr<scalar_t>();
    const scalar_t* gp = g.data_ptr<scalar_t>();
    const scalar_t* mp = m.data_ptr<scalar_t>();
    const scalar_t* sp = s.data_ptr<scalar_t>();
    const scalar_t* gainp = gn.defined() ? gn.data_ptr<scalar_t>() : nullptr;
    scalar_t* gwp = gw.data_ptr<scalar_t>();
    scalar_t* ggp = ggain.defined() ? ggain.data_ptr<scalar_t>() : nullptr;
    at::parallel_for(0, out, rows_per_task(n), [&](int64_t r0, int64_t r1) {
#ifdef OTTT_WS_AVX2
      if (has_avx2_fma()) {
        ws_backward_rows_avx2<scalar_t>(wp, gp, mp, sp, gainp, gwp, ggp, n, r0, r1);
        return;
      }
#endif
      ws_backward_rows<scalar_t>(wp, gp, mp, sp, gainp, gwp, ggp, n, r0, r1);
    });
  });
  return {gw, ggain.defined() ? c10::optional<at::Tensor>(ggain) : c10::nullopt};
}

}  // namespace

void register_ws_cpu(pybind11::module_& m) {
  const auto nogil = pybind11::call_guard<pybind11::gil_scoped_release>();
  m.def("ws_forward_cpu", &ws_forward_cpu, nogil,
        "scaled weight standardization on the CPU, fused per row: (W_hat, mean, scale) (csrc/cpu/ws_cpu.cpp)");
  m.def("ws_backward_cpu", &ws_backward_cpu, nogil,
        "its backward: (grad_weight, grad_gain) (csrc/cpu/ws_cpu.cpp)");
}

}  // namespace ottt
