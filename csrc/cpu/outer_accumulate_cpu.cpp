// CPU kernel of outer_accumulate_: grad_w += alpha * g^T a.
// Batches up to kOuterSmallBatchCpu rows (OTTT's online regime) accumulating
// into a contiguous float32 grad_w take the AVX-512 rank-k loop of
// outer_small_batch_avx512.h where the CPU has AVX-512F: 8 rows of g and a per
// pass, over blocks of grad_w small enough to stay in L2 between passes.
// Everything else is BLAS (addmm_ with beta = 1, no temporary result), the
// fastest way for larger batches (measured in benchmarks/kernels.py). fp16/bf16
// inputs accumulating into an fp32 grad_w are widened first: [N, out] and
// [N, in] are small next to grad_w.
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>

#include "../outer_accumulate_common.h"
#include "outer_small_batch_avx512.h"

namespace ottt {
namespace {

// Up to this many rows of g and a the loop beats MKL's sgemm on one core (512 x 512:
// 1.1-1.5x at 1-8 rows, ~1.5x at 16 with two passes; benchmarks/results/kernels_cpu.md).
constexpr int64_t kOuterSmallBatchCpu = 16;
constexpr int64_t kRowsPerPass = 8;  // outer_rows_n's largest batch

// Rows of grad_w per block: ~32 K elements (128 KB of float32), which stay in L2
// across the passes and make a parallel chunk worth a thread.
int64_t row_block(int64_t in) { return std::max<int64_t>(4, 32768 / std::max<int64_t>(in, 1)); }

void outer_accumulate_cpu(at::Tensor& grad_w, const at::Tensor& g_in, const at::Tensor& a_in, double alpha) {
  OuterArgs args = check_outer_args(grad_w, g_in, a_in, alpha);
  if (args.n == 0 || grad_w.numel() == 0) return;
  const auto dt = grad_w.scalar_type();
  at::Tensor g = args.g.scalar_type() == dt ? args.g : args.g.to(dt);
  at::Tensor a = args.a.scalar_type() == dt ? args.a : args.a.to(dt);
#if OTTT_HAVE_AVX512_OUTER
  if (args.n <= kOuterSmallBatchCpu && dt == at::kFloat && grad_w.is_contiguous() && has_avx512f()) {
    float* w = grad_w.data_ptr<float>();
    const float* gp = g.data_ptr<float>();
    const float* ap = a.data_ptr<float>();
    const int64_t out = grad_w.size(0), in = grad_w.size(1), n = args.n;
    const float al = static_cast<float>(alpha);
    const int64_t block = row_block(in);
    at::parallel_for(0, out, block, [&](int64_t r0, int64_t r1) {
      for (int64_t b0 = r0; b0 < r1; b0 += block) {
        const int64_t b1 = std::min(b0 + block, r1);
        for (int64_t k0 = 0; k0 < n; k0 += kRowsPerPass)
          avx512::outer_rows_n(std::min(kRowsPerPass, n - k0), w, gp + k0 * out, ap + k0 * in, out, in, al, b0, b1);
      }
    });
    return;
  }
#endif
  grad_w.addmm_(g.t(), a, /*beta=*/1, /*alpha=*/alpha);
}

}  // namespace

TORCH_LIBRARY_IMPL(ottt_cuda, CPU, m) { m.impl("outer_accumulate_", &outer_accumulate_cpu); }

}  // namespace ottt
