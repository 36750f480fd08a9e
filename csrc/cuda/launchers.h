// Interface between the host-side op code (csrc/cuda/*_cuda.cpp, compiled by
// g++ against ATen) and the CUDA kernels (csrc/cuda/*_kernels.cu, compiled by
// nvcc without ATen so that they build fast). Only raw pointers, sizes and the
// stream cross this boundary; every launcher is explicitly instantiated for
// float, double, c10::Half and c10::BFloat16 in its .cu file.
//
// All pointers refer to contiguous buffers on the current device; sizes are
// 64-bit element counts (tensors may exceed 2^31 elements). A launcher with
// nothing to do launches nothing. Launchers do not check for launch errors: the
// caller does (C10_CUDA_KERNEL_LAUNCH_CHECK) so the error names the op.
#pragma once

#include <cstdint>

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include "cuda_api.h"

#include "../ottt_math.h"

namespace ottt {
namespace gpu {

// Arithmetic type of a storage type: the same mapping as at::opmath_type
// (float for half/bfloat16), restated here because the .cu files do not
// include ATen. The .cpp files static_assert that the two agree.
template <typename T>
struct OpMath {
  using type = T;
};
template <>
struct OpMath<c10::Half> {
  using type = float;
};
template <>
struct OpMath<c10::BFloat16> {
  using type = float;
};
template <typename T>
using opmath_t = typename OpMath<T>::type;

// ---- lif_step -------------------------------------------------------------

// Optional inputs (v, trace, mask) and outputs (z, trace_next) are null when
// absent. z = h - v_th is what backward needs (see fire_from_z in ottt_math.h).
template <typename T>
struct LifStepFwdArgs {
  const T* x;
  const T* v;
  const T* trace;
  const T* mask;
  T* spike;
  T* v_next;
  T* z;
  T* trace_next;
  int64_t n;
  LIFCoeffs<opmath_t<T>> c;
  opmath_t<T> trace_decay;
};

template <typename T>
void launch_lif_step_fwd(const LifStepFwdArgs<T>& args, cudaStream_t stream);

// grad_x = grad_spike * mask * sg(z) * in_scale, z = h - v_th as saved by
// forward; mask may be null.
template <typename T>
struct LifStepBwdArgs {
  const T* grad_spike;
  const T* z;
  const T* mask;
  T* grad_x;
  int64_t n;
  Surrogate kind;
  opmath_t<T> alpha;
  opmath_t<T> in_scale;
};

template <typename T>
void launch_lif_step_bwd(const LifStepBwdArgs<T>& args, cudaStream_t stream);

// ---- lif_multistep --------------------------------------------------------

// Buffers are [steps, n] (time-major); v0 may be null (zero start), z_seq
// (z = h - v_th per step) may be null (not saved). Requires steps >= 1 (the
// host handles steps == 0).
template <typename T>
struct LifMultistepFwdArgs {
  const T* x;
  const T* v0;
  T* spike;
  T* z_seq;
  T* v_last;
  int64_t steps;
  int64_t n;
  LIFCoeffs<opmath_t<T>> c;
};

template <typename T>
void launch_lif_multistep_fwd(const LifMultistepFwdArgs<T>& args, cudaStream_t stream);

// z_seq as saved by forward; grad_v_last may be null (zero). Requires steps >= 1.
template <typename T>
struct LifMultistepBwdArgs {
  const T* grad_spike;
  const T* grad_v_last;
  const T* z_seq;
  T* grad_x;
  T* grad_v0;
  int64_t steps;
  int64_t n;
  LIFCoeffs<opmath_t<T>> c;
  Surrogate kind;
  opmath_t<T> alpha;
  bool detach_reset;  // false: back-propagate through the reset too (dreset_dh_attached)
};

template <typename T>
void launch_lif_multistep_bwd(const LifMultistepBwdArgs<T>& args, cudaStream_t stream);

// ---- trace_update ---------------------------------------------------------

// out = decay * trace + s. trace may be null (a zero trace); out may alias
// trace and/or s (the in-place op), so no pointer here is __restrict__.
template <typename T>
void launch_trace_update(const T* trace, const T* s, T* out, int64_t n, opmath_t<T> decay,
                         cudaStream_t stream);

// ---- outer_accumulate_ ----------------------------------------------------

// w[out, in] += alpha * g[n, out]^T a[n, in] over contiguous buffers, for small
// n (the host routes large n to a GEMM). Sums over the n rows in
// opmath_t<acc_t> and writes each element of w once. Instantiated for
// acc_t == in_t and for acc_t = float with in_t = c10::Half / c10::BFloat16.
template <typename acc_t, typename in_t>
void launch_outer_accumulate_small(acc_t* w, const in_t* g, const in_t* a, int64_t n, int64_t out,
                                   int64_t in, double alpha, cudaStream_t stream);

}  // namespace gpu
}  // namespace ottt
