// CUDA kernel of the presynaptic trace a = decay * a + s. One kernel serves
// the out-of-place and the in-place op: `out` may be the same buffer as
// `trace` (and even `s`); each element is read before it is written by the
// same thread, so aliasing is safe as long as no pointer is __restrict__.
#include "kernel_utils.cuh"

namespace ottt {
namespace gpu {
namespace {

template <typename T>
struct TraceOp {
  const T* trace;  // null: a zero trace
  const T* s;
  T* out;
  opmath_t<T> decay;

  template <int V>
  __device__ __forceinline__ void run(int64_t i) const {
    using op_t = opmath_t<T>;
    Pack<T, V> a{};
    if (trace) a = load_pack<V>(trace + i);
    const Pack<T, V> sv = load_pack<V>(s + i);
    Pack<T, V> o;
#pragma unroll
    for (int k = 0; k < V; ++k) o.v[k] = static_cast<T>(trace_step(op_t(a.v[k]), op_t(sv.v[k]), decay));
    store_pack<V>(out + i, o);
  }
};

}  // namespace

template <typename T>
void launch_trace_update(const T* trace, const T* s, T* out, int64_t n, opmath_t<T> decay, cudaStream_t stream) {
  const bool aligned = aligned16(trace) && aligned16(s) && aligned16(out);
  launch_elementwise<T>(TraceOp<T>{trace, s, out, decay}, n, aligned, stream);
}

#define OTTT_INSTANTIATE_TRACE(T) \
  template void launch_trace_update<T>(const T*, const T*, T*, int64_t, opmath_t<T>, cudaStream_t);

OTTT_INSTANTIATE_TRACE(float)
OTTT_INSTANTIATE_TRACE(double)
OTTT_INSTANTIATE_TRACE(c10::Half)
OTTT_INSTANTIATE_TRACE(c10::BFloat16)

#undef OTTT_INSTANTIATE_TRACE

}  // namespace gpu
}  // namespace ottt
