// CUDA kernel of outer_accumulate_ for small batches (OTTT's online regime,
// batch 1 to 8): w[out, in] += alpha * g[n, out]^T a[n, in].
//
// A GEMM would tile a K = n reduction that is too short to amortize its
// setup; here the cost is streaming w once (read + write), so each thread
// owns a column j and kRows consecutive rows of w, sums over the n batch rows
// in registers, and writes each element once. Owning several rows lets one
// load of a[b, j] serve kRows products; the g[b, o] loads are the same
// address across a warp (a broadcast). The sum runs over b in order, as in
// csrc/cpu/outer_accumulate_cpu.cpp.
#include <algorithm>

#include "kernel_utils.cuh"

namespace ottt {
namespace gpu {
namespace {

constexpr int kRows = 4;

// Block = (bx columns) x (by row groups), bx * by = kThreads; threadIdx.x runs
// along a row of w, so the accesses to w and a are coalesced. grid.x strides
// over row groups and grid.y over column tiles, so that a wide and short w
// (a classifier layer: 10 x 4096) still spreads over many SMs.
template <typename acc_t, typename in_t>
__global__ void __launch_bounds__(kThreads)
    outer_small_kernel(acc_t* __restrict__ w, const in_t* __restrict__ g, const in_t* __restrict__ a, int64_t n,
                       int64_t out, int64_t in, opmath_t<acc_t> alpha) {
  using op_t = opmath_t<acc_t>;
  const int64_t groups = (out + kRows - 1) / kRows;
  const int64_t group_stride = static_cast<int64_t>(gridDim.x) * blockDim.y;
  for (int64_t grp = static_cast<int64_t>(blockIdx.x) * blockDim.y + threadIdx.y; grp < groups;
       grp += group_stride) {
    const int64_t o0 = grp * kRows;
    const int64_t rows = out - o0 < kRows ? out - o0 : kRows;
    for (int64_t j = static_cast<int64_t>(blockIdx.y) * blockDim.x + threadIdx.x; j < in;
         j += static_cast<int64_t>(gridDim.y) * blockDim.x) {
      op_t sum[kRows];
#pragma unroll
      for (int r = 0; r < kRows; ++r) sum[r] = op_t(0);
      for (int64_t b = 0; b < n; ++b) {
        const op_t av = op_t(a[b * in + j]);
        const in_t* gb = g + b * out + o0;
#pragma unroll
        for (int r = 0; r < kRows; ++r)
          if (r < rows) sum[r] += op_t(gb[r]) * av;
      }
#pragma unroll
      for (int r = 0; r < kRows; ++r) {
        if (r < rows) {
          acc_t* p = w + (o0 + r) * in + j;
          *p = static_cast<acc_t>(op_t(*p) + alpha * sum[r]);
        }
      }
    }
  }
}

}  // namespace

template <typename acc_t, typename in_t>
void launch_outer_accumulate_small(acc_t* w, const in_t* g, const in_t* a, int64_t n, int64_t out, int64_t in,
                                   double alpha, cudaStream_t stream) {
  if (n <= 0 || out <= 0 || in <= 0) return;
  // Narrow rows (small `in`) get narrower blocks with more row groups, so few
  // threads idle; a warp is the narrowest that still coalesces.
  int bx = 32;
  while (bx < kThreads && bx < in) bx *= 2;
  const int by = kThreads / bx;
  const int64_t groups = (out + kRows - 1) / kRows;
  const int64_t row_blocks = (groups + by - 1) / by;
  const int64_t col_tiles = (in + bx - 1) / bx;
  const int64_t cap = max_grid_blocks(kThreads);
  const int64_t gy = std::min<int64_t>({col_tiles, 65535, cap});  // 65535: the limit of grid.y
  const int64_t gx = std::max<int64_t>(1, std::min<int64_t>(row_blocks, cap / gy));
  const dim3 grid(static_cast<unsigned>(gx), static_cast<unsigned>(gy));
  const dim3 block(static_cast<unsigned>(bx), static_cast<unsigned>(by));
  OTTT_LAUNCH(grid, block, 0, stream, outer_small_kernel<acc_t, in_t>)
  (w, g, a, n, out, in, static_cast<opmath_t<acc_t>>(alpha));
}

#define OTTT_INSTANTIATE_OUTER(ACC, IN)                                                                   \
  template void launch_outer_accumulate_small<ACC, IN>(ACC*, const IN*, const IN*, int64_t, int64_t, int64_t, \
                                                       double, cudaStream_t);

OTTT_INSTANTIATE_OUTER(float, float)
OTTT_INSTANTIATE_OUTER(double, double)
OTTT_INSTANTIATE_OUTER(c10::Half, c10::Half)
OTTT_INSTANTIATE_OUTER(c10::BFloat16, c10::BFloat16)
OTTT_INSTANTIATE_OUTER(float, c10::Half)
OTTT_INSTANTIATE_OUTER(float, c10::BFloat16)

#undef OTTT_INSTANTIATE_OUTER

}  // namespace gpu
}  // namespace ottt
