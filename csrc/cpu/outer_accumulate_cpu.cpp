// CPU kernel of outer_accumulate_: grad_w += alpha * g^T a.
// Batches up to kOuterSmallBatchCpu rows (OTTT's online regime) accumulating
// into a contiguous float32 grad_w take the AVX-512 rank-k loop of
// outer_small_batch_avx512.h where the CPU has AVX-512F (one pass of up to 8
// rows of g and a over blocks of grad_w).
// Everything else is BLAS (addmm_ with beta = 1, no temporary result), the
// fastest way for larger batches (measured in benchmarks/kernels.py), called as
// at::cpu::addmm_: this op already went through the dispatcher (and its autograd
// fallback), a second trip would only add its fixed cost (~0.3 us). fp16/bf16
// inputs accumulating into an fp32 grad_w are widened first: [N, out] and
// [N, in] are small next to grad_w.
#include <ATen/CPUFunctions.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>

#include "../outer_accumulate_common.h"
#include "outer_small_batch_avx512.h"

namespace ottt {
namespace {

// Up to this many rows of g and a (one pass of the loop, which takes 1 to 8) it is
// worth it on one core (512 x 512: 1.1-1.25x MKL's sgemm at 2-8 rows, about even at
// 1 row; benchmarks/results/kernels_cpu.md). Two passes (9-16 rows) lost to sgemm
// (1.15-1.2x slower): each pass streams grad_w again, while sgemm's cost grows slowly
// with the batch.
constexpr int64_t kOuterSmallBatchCpu = 8;

// Rows of grad_w per parallel chunk: at least ~32 K elements of work each.
int64_t row_grain(int64_t in) { return std::max<int64_t>(4, 32768 / std::max<int64_t>(in, 1)); }

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
    at::parallel_for(0, out, row_grain(in), [&](int64_t r0, int64_t r1) {
      avx512::outer_rows_n(n, w, gp, ap, out, in, al, r0, r1);
    });
    return;
  }
#endif
  at::cpu::addmm_(grad_w, g.t(), a, /*beta=*/1, /*alpha=*/alpha);
}

}  // namespace

TORCH_LIBRARY_IMPL(ottt_cuda, CPU, m) { m.impl("outer_accumulate_", &outer_accumulate_cpu); }

}  // namespace ottt
