// CUDA kernels of the multi-step LIF op (the BPTT baseline): one thread per
// neuron runs all time steps, so the membrane stays in a register and every
// time step is one coalesced sweep over the [steps, n] buffers. Forward runs
// in time order; backward runs the reverse-time recurrence with the reset
// detached (or back-propagated through, detach_reset=False), operation for
// operation as csrc/cpu/lif_multistep_cpu.cpp.
#include "kernel_utils.cuh"

namespace ottt {
namespace gpu {
namespace {

// Fewer threads per block than the element-wise kernels: the work per thread
// is `steps` times larger, so spreading a modest neuron count over more SMs
// matters more than block count overhead.
constexpr int kSeqThreads = 128;

template <typename T>
__global__ void __launch_bounds__(kSeqThreads) lif_multistep_fwd_kernel(const LifMultistepFwdArgs<T> p) {
  using op_t = opmath_t<T>;
  const int64_t n = p.n;
  // Outputs are freshly allocated, so nothing aliases; saying so lets the
  // unrolled loop issue the loads of later steps ahead of earlier stores.
  const T* __restrict__ x = p.x;
  T* __restrict__ spike = p.spike;
  T* __restrict__ z_seq = p.z_seq;
  for (int64_t i = global_thread(); i < n; i += grid_stride()) {
    op_t v = p.v0 ? op_t(p.v0[i]) : op_t(0);
    // Unrolling lets the loads of later steps issue before the recurrence
    // through `v` resolves; only the arithmetic is serial.
#pragma unroll 4
    for (int64_t t = 0; t < p.steps; ++t) {
      const int64_t k = t * n + i;
      const op_t h = charge(p.c, v, op_t(x[k]));
      const op_t s = fire(p.c, h);
      v = reset(p.c, h, s);
      spike[k] = static_cast<T>(s);
      if (z_seq) z_seq[k] = static_cast<T>(h - p.c.v_th);
    }
    p.v_last[i] = static_cast<T>(v);
  }
}

// The second bound (at least 1 resident block per SM) matters: with the thread
// bound alone ptxas 13 held this kernel to 32 registers for full occupancy and
// spilled the unrolled float/half/bfloat16 loops (docs/cuda_resource_usage_sm90.md
// records what it uses now; tests/test_cuda_resource_usage.py fails on a spill).
template <typename T>
__global__ void __launch_bounds__(kSeqThreads, 1) lif_multistep_bwd_kernel(const LifMultistepBwdArgs<T> p) {
  using op_t = opmath_t<T>;
  const int64_t n = p.n;
  const T* __restrict__ z_seq = p.z_seq;
  const T* __restrict__ grad_spike = p.grad_spike;
  T* __restrict__ grad_x = p.grad_x;
  for (int64_t i = global_thread(); i < n; i += grid_stride()) {
    // grad_v: dL/dv[t], flowing back from step t+1 (and from v_last at t = steps-1).
    op_t grad_v = p.grad_v_last ? op_t(p.grad_v_last[i]) : op_t(0);
    // fp64's exp and division are register-hungry calls: unrolled four times
    // they spill, so fp64 (a checking dtype, not a fast one) is not unrolled.
#pragma unroll(sizeof(op_t) == 8 ? 1 : 4)
    for (int64_t t = p.steps - 1; t >= 0; --t) {
      const int64_t k = t * n + i;
      // z was saved instead of h so that this recovers forward's spike exactly.
      const op_t z = op_t(z_seq[k]);
      const op_t sg = surrogate_grad(p.kind, z, p.alpha);
      // detach_reset is uniform over the grid: the branch never diverges.
      const op_t dv_dh = p.detach_reset ? dreset_dh(p.c, fire_from_z(z)) : dreset_dh_attached(p.c, z, sg);
      const op_t grad_h = op_t(grad_spike[k]) * sg + grad_v * dv_dh;
      grad_x[k] = static_cast<T>(grad_h * p.c.in_scale);
      grad_v = grad_h * p.c.decay;
    }
    p.grad_v0[i] = static_cast<T>(grad_v);
  }
}

}  // namespace

template <typename T>
void launch_lif_multistep_fwd(const LifMultistepFwdArgs<T>& args, cudaStream_t stream) {
  if (args.n <= 0 || args.steps <= 0) return;
  OTTT_LAUNCH(grid_blocks(args.n, kSeqThreads), kSeqThreads, 0, stream, lif_multistep_fwd_kernel<T>)(args);
}

template <typename T>
void launch_lif_multistep_bwd(const LifMultistepBwdArgs<T>& args, cudaStream_t stream) {
  if (args.n <= 0 || args.steps <= 0) return;
  OTTT_LAUNCH(grid_blocks(args.n, kSeqThreads), kSeqThreads, 0, stream, lif_multistep_bwd_kernel<T>)(args);
}

#define OTTT_INSTANTIATE_LIF_MULTISTEP(T)                                                     \
  template void launch_lif_multistep_fwd<T>(const LifMultistepFwdArgs<T>&, cudaStream_t); \
  template void launch_lif_multistep_bwd<T>(const LifMultistepBwdArgs<T>&, cudaStream_t);

OTTT_INSTANTIATE_LIF_MULTISTEP(float)
OTTT_INSTANTIATE_LIF_MULTISTEP(double)
OTTT_INSTANTIATE_LIF_MULTISTEP(c10::Half)
OTTT_INSTANTIATE_LIF_MULTISTEP(c10::BFloat16)

#undef OTTT_INSTANTIATE_LIF_MULTISTEP

}  // namespace gpu
}  // namespace ottt
