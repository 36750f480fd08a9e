// Argument checks and flattening for outer_accumulate_, shared by the CPU and
// CUDA launch code: grad_w [out, in] += alpha * g[..., out]^T a[..., in].
#pragma once

#include "common.h"

namespace ottt {

// Up to this many rows the direct kernel beats a GEMM launch: this is OTTT's
// online regime (batch 1 to 8).
constexpr int64_t kOuterSmallBatch = 8;

struct OuterArgs {
  at::Tensor g;  // [N, out], contiguous
  at::Tensor a;  // [N, in], contiguous
  int64_t n;
};

inline OuterArgs check_outer_args(const at::Tensor& grad_w, const at::Tensor& g, const at::Tensor& a,
                                   double alpha) {
  check_float(grad_w, "grad_w");
  check_float(g, "g");
  check_float(a, "a");
  TORCH_CHECK_VALUE(grad_w.dim() == 2, "grad_w must be 2-D [out, in], got shape ", grad_w.sizes());
  TORCH_CHECK_VALUE(g.dim() >= 1 && a.dim() >= 1, "g and a must have at least one dimension");
  TORCH_CHECK_VALUE(g.size(-1) == grad_w.size(0), "g's last dimension must equal grad_w.size(0) = ",
              grad_w.size(0), ", got g of shape ", g.sizes());
  TORCH_CHECK_VALUE(a.size(-1) == grad_w.size(1), "a's last dimension must equal grad_w.size(1) = ",
              grad_w.size(1), ", got a of shape ", a.sizes());
  TORCH_CHECK_VALUE(g.sizes().slice(0, g.dim() - 1) == a.sizes().slice(0, a.dim() - 1),
              "g and a must have the same leading (batch) dimensions, got ", g.sizes(), " and ", a.sizes());
  TORCH_CHECK_TYPE(g.scalar_type() == a.scalar_type(), "g and a must have the same dtype, got ",
              g.scalar_type(), " and ", a.scalar_type());
  TORCH_CHECK_VALUE(g.device() == grad_w.device() && a.device() == grad_w.device(),
              "grad_w, g and a must be on one device, got ", grad_w.device(), ", ", g.device(), ", ",
              a.device());
  // Accumulate in grad_w's dtype: same as the inputs, or fp32 for fp16/bf16 inputs.
  const bool same = grad_w.scalar_type() == g.scalar_type();
  const bool widened = grad_w.scalar_type() == at::kFloat &&
                       (g.scalar_type() == at::kHalf || g.scalar_type() == at::kBFloat16);
  TORCH_CHECK_TYPE(same || widened, "grad_w must have the dtype of g and a, or float32 when they are "
              "float16/bfloat16; got grad_w ", grad_w.scalar_type(), " and g ", g.scalar_type());
  check_finite(alpha, "alpha");
  OuterArgs r;
  // flatten, not reshape(-1, k): the latter is ambiguous when k == 0.
  r.g = (g.dim() == 1 ? g.unsqueeze(0) : g.flatten(0, -2)).contiguous();
  r.a = (a.dim() == 1 ? a.unsqueeze(0) : a.flatten(0, -2)).contiguous();
  r.n = r.g.size(0);
  return r;
}

}  // namespace ottt
