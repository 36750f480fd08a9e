// CPU kernel of outer_accumulate_: grad_w += alpha * g^T a.
// On the CPU, BLAS (addmm_ with beta = 1, no temporary result) is the fastest
// way at every batch size, batch 1 included (measured in benchmarks/kernels.py);
// the custom small-batch kernel is a GPU matter (csrc/cuda). fp16/bf16 inputs
// accumulating into an fp32 grad_w are widened first: [N, out] and [N, in] are
// small next to grad_w.
#include <torch/library.h>

#include "../outer_accumulate_common.h"

namespace ottt {
namespace {

void outer_accumulate_cpu(at::Tensor& grad_w, const at::Tensor& g_in, const at::Tensor& a_in, double alpha) {
  OuterArgs args = check_outer_args(grad_w, g_in, a_in, alpha);
  if (args.n == 0 || grad_w.numel() == 0) return;
  const auto dt = grad_w.scalar_type();
  at::Tensor g = args.g.scalar_type() == dt ? args.g : args.g.to(dt);
  at::Tensor a = args.a.scalar_type() == dt ? args.a : args.a.to(dt);
  grad_w.addmm_(g.t(), a, /*beta=*/1, /*alpha=*/alpha);
}

}  // namespace

TORCH_LIBRARY_IMPL(ottt_cuda, CPU, m) { m.impl("outer_accumulate_", &outer_accumulate_cpu); }

}  // namespace ottt
