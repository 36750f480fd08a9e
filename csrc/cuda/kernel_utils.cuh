// Device-side helpers shared by the .cu files: grid sizing for grid-stride
// loops and a vectorized element-wise driver. No ATen: compiled by nvcc, or
// by a C++ compiler against the emulated runtime (see cuda_api.h).
#pragma once

#include <atomic>
#include <cstdint>

#include "cuda_api.h"
#include "launchers.h"

namespace ottt {
namespace gpu {

constexpr int kThreads = 256;

// Most blocks worth launching for a grid-stride loop with `threads` threads
// per block: a few waves of resident blocks (beyond that extra blocks only add
// scheduling overhead; each thread strides over several items instead). SM
// counts are cached per device because the launchers run on every time step.
inline int64_t max_grid_blocks(int threads) {
  constexpr int kMaxDevices = 64;
  static std::atomic<int> resident_cache[kMaxDevices];
  int dev = 0;
  int resident = 0;  // resident threads on the whole device
  if (cudaGetDevice(&dev) == cudaSuccess && dev >= 0 && dev < kMaxDevices)
    resident = resident_cache[dev].load(std::memory_order_relaxed);
  if (resident <= 0) {
    // A failed query falls back to a typical device. The failure must not stay
    // behind as this thread's last error: the caller's launch check would then
    // report it as the op's launch failing. An error that was already pending
    // is not ours to clear.
    const bool pending = cudaPeekAtLastError() != cudaSuccess;
    bool failed = false;
    int sms = 0, per_sm = 0;
    if (cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess || sms <= 0) {
      failed = true;
      sms = 108;
    }
    if (cudaDeviceGetAttribute(&per_sm, cudaDevAttrMaxThreadsPerMultiProcessor, dev) != cudaSuccess ||
        per_sm <= 0) {
      failed = true;
      per_sm = 2048;
    }
    if (failed && !pending) (void)cudaGetLastError();
    resident = sms * per_sm;
    if (dev >= 0 && dev < kMaxDevices) resident_cache[dev].store(resident, std::memory_order_relaxed);
  }
  const int64_t cap = 4 * static_cast<int64_t>(resident / threads);
  return cap > 0 ? cap : 1;
}

// Number of blocks for a grid-stride loop over `work` items: enough to cover
// the work, at most max_grid_blocks.
inline unsigned grid_blocks(int64_t work, int threads) {
  const int64_t cap = max_grid_blocks(threads);
  const int64_t need = (work + threads - 1) / threads;
  const int64_t blocks = need < cap ? need : cap;
  return static_cast<unsigned>(blocks > 0 ? blocks : 1);
}

__device__ __forceinline__ int64_t global_thread() {
  return static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
}
__device__ __forceinline__ int64_t grid_stride() { return static_cast<int64_t>(gridDim.x) * blockDim.x; }

// V consecutive elements moved by one memory instruction (16 bytes for the
// widest V used), which needs V * sizeof(T) alignment of the address.
template <typename T, int V>
struct alignas(sizeof(T) * V) Pack {
  T v[V];
};

template <int V, typename T>
__device__ __forceinline__ Pack<T, V> load_pack(const T* p) {
  return *reinterpret_cast<const Pack<T, V>*>(p);
}
template <int V, typename T>
__device__ __forceinline__ void store_pack(T* p, const Pack<T, V>& x) {
  *reinterpret_cast<Pack<T, V>*>(p) = x;
}

// Elements per 16-byte access.
template <typename T>
constexpr int vec_width() {
  return 16 / sizeof(T) > 0 ? static_cast<int>(16 / sizeof(T)) : 1;
}

inline bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

// Element-wise driver. `Op` has `template <int V> __device__ void run(int64_t i) const`
// that processes elements [i, i + V). With VEC > 1 the bulk goes in aligned
// packs and the last n % VEC elements one at a time.
template <typename Op, int VEC>
__global__ void __launch_bounds__(kThreads) elementwise_kernel(const Op op, int64_t n) {
  const int64_t tid = global_thread(), stride = grid_stride();
  const int64_t nvec = n / VEC;
  for (int64_t iv = tid; iv < nvec; iv += stride) op.template run<VEC>(iv * VEC);
  if constexpr (VEC > 1) {
    for (int64_t i = nvec * VEC + tid; i < n; i += stride) op.template run<1>(i);
  }
}

// `aligned`: every pointer the op touches is 16-byte aligned, so packs of
// vec_width<T>() elements may be used; otherwise one element per access.
template <typename T, typename Op>
void launch_elementwise(const Op& op, int64_t n, bool aligned, cudaStream_t stream) {
  if (n <= 0) return;
  constexpr int V = vec_width<T>();
  if (V > 1 && aligned && n >= V) {
    OTTT_LAUNCH(grid_blocks((n + V - 1) / V, kThreads), kThreads, 0, stream, elementwise_kernel<Op, V>)(op, n);
  } else {
    OTTT_LAUNCH(grid_blocks(n, kThreads), kThreads, 0, stream, elementwise_kernel<Op, 1>)(op, n);
  }
}

}  // namespace gpu
}  // namespace ottt
