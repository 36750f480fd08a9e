// Host-side helpers shared by the CPU and CUDA launch code: argument checks
// with messages that name the argument, surrogate-name parsing, and the
// derivation of the kernel constants from the op's scalar arguments.
//
// The checks raise c10::ValueError / c10::TypeError (TORCH_CHECK_VALUE /
// TORCH_CHECK_TYPE), which Python sees as ValueError / TypeError, the types the
// Python wrappers (ottt_cuda/_validation.py) raise for the same mistakes: the
// wrappers' fast path (ottt_cuda/ops.py) relies on these checks.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <c10/util/Optional.h>

#include <cmath>
#include <string>

#include "ottt_math.h"

namespace ottt {

inline Surrogate parse_surrogate(const std::string& name) {
  if (name == "sigmoid") return Surrogate::Sigmoid;
  if (name == "atan") return Surrogate::ATan;
  if (name == "triangle") return Surrogate::Triangle;
  if (name == "rectangle") return Surrogate::Rectangle;
  TORCH_CHECK_VALUE(false, "surrogate must be one of 'sigmoid', 'atan', 'triangle', 'rectangle'; got '", name, "'");
}

inline void check_finite(double value, const char* name) {
  TORCH_CHECK_VALUE(std::isfinite(value), name, " must be finite, got ", value);
}

inline void check_neuron_args(double tau, double alpha) {
  check_finite(tau, "tau");
  check_finite(alpha, "alpha");
  TORCH_CHECK_VALUE(tau > 0.0, "tau must be > 0, got ", tau);
  TORCH_CHECK_VALUE(alpha > 0.0, "alpha must be > 0, got ", alpha);
}

// A trace leak outside [0, 1] is no trace of past spikes (see _validation.decay).
inline void check_decay(double decay, const char* name) {
  check_finite(decay, name);
  TORCH_CHECK_VALUE(decay >= 0.0 && decay <= 1.0, name, " must be in [0, 1], got ", decay);
}

inline void check_float(const at::Tensor& t, const char* name) {
  const auto dt = t.scalar_type();
  TORCH_CHECK_TYPE(dt == at::kDouble || dt == at::kFloat || dt == at::kHalf || dt == at::kBFloat16, name,
                   " must be a floating-point tensor (float64, float32, float16 or bfloat16), got ", dt);
}

// `other` must match `ref` in shape, dtype and device.
inline void check_like(const at::Tensor& other, const char* name, const at::Tensor& ref,
                       const char* ref_name) {
  TORCH_CHECK_VALUE(other.sizes() == ref.sizes(), name, " must have the shape of ", ref_name, " ",
                    ref.sizes(), ", got ", other.sizes());
  TORCH_CHECK_VALUE(other.device() == ref.device(), name, " must be on the device of ", ref_name, " (",
                    ref.device(), "), got ", other.device());
  TORCH_CHECK_TYPE(other.scalar_type() == ref.scalar_type(), name, " must have the dtype of ", ref_name,
                   " (", ref.scalar_type(), "), got ", other.scalar_type());
}

template <typename T>
inline LIFCoeffs<T> coeffs_from_args(double tau, double v_th, const c10::optional<double>& v_reset,
                                     bool decay_input) {
  return make_lif_coeffs<T>(tau, v_th, v_reset.has_value(), v_reset.value_or(0.0), decay_input);
}

// A contiguous view of an optional tensor, or an undefined tensor.
inline at::Tensor contiguous_or_undefined(const c10::optional<at::Tensor>& t) {
  return (t.has_value() && t->defined()) ? t->contiguous() : at::Tensor();
}

}  // namespace ottt
