// CUDA launch code of outer_accumulate_: grad_w += alpha * g^T a.
// Small batches (OTTT's online regime) take the direct kernel of
// outer_accumulate_kernels.cu, which streams grad_w once; larger ones take
// cuBLAS through ATen (addmm_ with beta = 1, no temporary result).
#include <torch/library.h>

#include "../outer_accumulate_common.h"
#include "host_utils.h"

namespace ottt {
namespace {

void outer_accumulate_cuda(at::Tensor& grad_w, const at::Tensor& g_in, const at::Tensor& a_in, double alpha) {
  OuterArgs args = check_outer_args(grad_w, g_in, a_in, alpha);
  check_cuda(grad_w, "grad_w");
  if (args.n == 0 || grad_w.numel() == 0) return;
  const bool mixed = grad_w.scalar_type() != args.g.scalar_type();
  if (args.n > kOuterSmallBatch) {
    // A GEMM in one dtype: widen fp16/bf16 inputs to grad_w's fp32 first, as
    // the CPU path does. (addmm's out_dtype overload would avoid the copies,
    // but it is missing from older torch; the copies are N x (out + in)
    // elements, small next to the out x in update.)
    at::Tensor g = mixed ? args.g.to(grad_w.scalar_type()) : args.g;
    at::Tensor a = mixed ? args.a.to(grad_w.scalar_type()) : args.a;
    grad_w.addmm_(g.t(), a, /*beta=*/1, /*alpha=*/alpha);
    return;
  }
  const DeviceGuard guard(grad_w.device());
  at::Tensor w = grad_w.is_contiguous() ? grad_w : grad_w.contiguous();
  const int64_t out = w.size(0), in = w.size(1);
  const cudaStream_t stream = current_stream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, args.g.scalar_type(), "outer_accumulate_cuda", [&] {
    using in_t = scalar_t;
    if (mixed) {
      // check_outer_args admits only fp32 grad_w with fp16/bf16 inputs here;
      // fp32 has no wider partner, so skip instantiating that combination.
      if constexpr (std::is_same_v<in_t, at::Half> || std::is_same_v<in_t, at::BFloat16>) {
        assert_same_opmath<float>();
        gpu::launch_outer_accumulate_small<float, in_t>(w.data_ptr<float>(), args.g.data_ptr<in_t>(),
                                                        args.a.data_ptr<in_t>(), args.n, out, in, alpha, stream);
      } else {
        TORCH_CHECK(false, "outer_accumulate_: unsupported dtype combination");
      }
    } else {
      assert_same_opmath<in_t>();
      gpu::launch_outer_accumulate_small<in_t, in_t>(w.data_ptr<in_t>(), args.g.data_ptr<in_t>(),
                                                     args.a.data_ptr<in_t>(), args.n, out, in, alpha, stream);
    }
    OTTT_KERNEL_LAUNCH_CHECK();
  });
  if (!w.is_same(grad_w)) grad_w.copy_(w);
}

}  // namespace

OTTT_CUDA_LIBRARY_IMPL(m) { m.impl("outer_accumulate_", &outer_accumulate_cuda); }

}  // namespace ottt
