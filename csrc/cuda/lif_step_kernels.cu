// CUDA kernels of the single-step LIF op: forward (charge, fire, reset, with
// the optional mask and fused trace of the output spikes) and the surrogate
// backward. Element-wise, memory bound: 16-byte accesses when aligned.
#include "kernel_utils.cuh"

namespace ottt {
namespace gpu {
namespace {

template <typename T>
struct LifStepFwdOp {
  LifStepFwdArgs<T> p;

  template <int V>
  __device__ __forceinline__ void run(int64_t i) const {
    using op_t = opmath_t<T>;
    const Pack<T, V> x = load_pack<V>(p.x + i);
    // Absent inputs stay zero-filled packs; the null checks are uniform
    // across the grid, so they cost no divergence.
    Pack<T, V> v{}, tr{}, m{};
    if (p.v) v = load_pack<V>(p.v + i);
    if (p.trace) tr = load_pack<V>(p.trace + i);
    if (p.mask) m = load_pack<V>(p.mask + i);
    Pack<T, V> s, vn, z, tn;
#pragma unroll
    for (int k = 0; k < V; ++k) {
      // Same sequence of operations as csrc/cpu/lif_step_cpu.cpp.
      const op_t hk = charge(p.c, p.v ? op_t(v.v[k]) : op_t(0), op_t(x.v[k]));
      const op_t sk = fire(p.c, hk);
      vn.v[k] = static_cast<T>(reset(p.c, hk, sk));
      const op_t out = p.mask ? sk * op_t(m.v[k]) : sk;
      s.v[k] = static_cast<T>(out);
      z.v[k] = static_cast<T>(hk - p.c.v_th);
      tn.v[k] = static_cast<T>(trace_step(op_t(tr.v[k]), out, p.trace_decay));
    }
    store_pack<V>(p.spike + i, s);
    store_pack<V>(p.v_next + i, vn);
    if (p.z) store_pack<V>(p.z + i, z);
    if (p.trace_next) store_pack<V>(p.trace_next + i, tn);
  }
};

template <typename T>
struct LifStepBwdOp {
  LifStepBwdArgs<T> p;

  template <int V>
  __device__ __forceinline__ void run(int64_t i) const {
    using op_t = opmath_t<T>;
    const Pack<T, V> g = load_pack<V>(p.grad_spike + i);
    const Pack<T, V> z = load_pack<V>(p.z + i);
    Pack<T, V> m{};
    if (p.mask) m = load_pack<V>(p.mask + i);
    Pack<T, V> out;
#pragma unroll
    for (int k = 0; k < V; ++k) {
      op_t gs = op_t(g.v[k]);
      if (p.mask) gs *= op_t(m.v[k]);
      out.v[k] = static_cast<T>(gs * surrogate_grad(p.kind, op_t(z.v[k]), p.alpha) * p.in_scale);
    }
    store_pack<V>(p.grad_x + i, out);
  }
};

}  // namespace

template <typename T>
void launch_lif_step_fwd(const LifStepFwdArgs<T>& args, cudaStream_t stream) {
  const bool aligned = aligned16(args.x) && aligned16(args.v) && aligned16(args.trace) &&
                       aligned16(args.mask) && aligned16(args.spike) && aligned16(args.v_next) &&
                       aligned16(args.z) && aligned16(args.trace_next);
  launch_elementwise<T>(LifStepFwdOp<T>{args}, args.n, aligned, stream);
}

template <typename T>
void launch_lif_step_bwd(const LifStepBwdArgs<T>& args, cudaStream_t stream) {
  const bool aligned =
      aligned16(args.grad_spike) && aligned16(args.z) && aligned16(args.mask) && aligned16(args.grad_x);
  launch_elementwise<T>(LifStepBwdOp<T>{args}, args.n, aligned, stream);
}

#define OTTT_INSTANTIATE_LIF_STEP(T)                                                \
  template void launch_lif_step_fwd<T>(const LifStepFwdArgs<T>&, cudaStream_t); \
  template void launch_lif_step_bwd<T>(const LifStepBwdArgs<T>&, cudaStream_t);

OTTT_INSTANTIATE_LIF_STEP(float)
OTTT_INSTANTIATE_LIF_STEP(double)
OTTT_INSTANTIATE_LIF_STEP(c10::Half)
OTTT_INSTANTIATE_LIF_STEP(c10::BFloat16)

#undef OTTT_INSTANTIATE_LIF_STEP

}  // namespace gpu
}  // namespace ottt
