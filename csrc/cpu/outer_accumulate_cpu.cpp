// CPU kernel of outer_accumulate_: grad_w += alpha * g^T a.
// Small batches (OTTT's online regime) take a direct loop that streams grad_w
// once; larger ones take BLAS (addmm_ with beta = 1, no temporary result).
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "../outer_accumulate_common.h"

namespace ottt {
namespace {

// Row-parallel rank-N update of a contiguous [out, in] buffer.
template <typename acc_t, typename in_t>
void outer_small(acc_t* w, const in_t* g, const in_t* a, int64_t n, int64_t out, int64_t in, double alpha) {
  using opmath_t = at::opmath_type<acc_t>;
  const opmath_t al = static_cast<opmath_t>(alpha);
  at::parallel_for(0, out, std::max<int64_t>(1, 65536 / std::max<int64_t>(in, 1)), [&](int64_t o0, int64_t o1) {
    for (int64_t o = o0; o < o1; ++o) {
      acc_t* row = w + o * in;
      for (int64_t j = 0; j < in; ++j) {
        opmath_t sum = 0;
        for (int64_t b = 0; b < n; ++b) sum += opmath_t(g[b * out + o]) * opmath_t(a[b * in + j]);
        row[j] = static_cast<acc_t>(opmath_t(row[j]) + al * sum);
      }
    }
  });
}

void outer_accumulate_cpu(at::Tensor& grad_w, const at::Tensor& g_in, const at::Tensor& a_in, double alpha) {
  OuterArgs args = check_outer_args(grad_w, g_in, a_in);
  if (args.n == 0 || grad_w.numel() == 0) return;
  const bool mixed = grad_w.scalar_type() != args.g.scalar_type();
  if (args.n > kOuterSmallBatch) {
    // BLAS works in one dtype: widen fp16/bf16 inputs to grad_w's dtype first.
    at::Tensor g = mixed ? args.g.to(grad_w.scalar_type()) : args.g;
    at::Tensor a = mixed ? args.a.to(grad_w.scalar_type()) : args.a;
    grad_w.addmm_(g.t(), a, /*beta=*/1, /*alpha=*/alpha);
    return;
  }
  at::Tensor w = grad_w.is_contiguous() ? grad_w : grad_w.contiguous();
  const int64_t out = w.size(0), in = w.size(1);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, args.g.scalar_type(), "outer_accumulate_cpu", [&] {
    using in_t = scalar_t;
    if (mixed) {
      outer_small<float, in_t>(w.data_ptr<float>(), args.g.data_ptr<in_t>(), args.a.data_ptr<in_t>(), args.n,
                               out, in, alpha);
    } else {
      outer_small<in_t, in_t>(w.data_ptr<in_t>(), args.g.data_ptr<in_t>(), args.a.data_ptr<in_t>(), args.n,
                              out, in, alpha);
    }
  });
  if (!w.is_same(grad_w)) grad_w.copy_(w);
}

}  // namespace

TORCH_LIBRARY_IMPL(ottt_cuda, CPU, m) { m.impl("outer_accumulate_", &outer_accumulate_cpu); }

}  // namespace ottt
