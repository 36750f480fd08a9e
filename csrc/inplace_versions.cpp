// ADInplaceOrView kernels of the in-place ops (trace_update_, outer_accumulate_):
// they bump the version of the tensor they write, as every in-place ATen op
// does, then run the op below this key.
//
// Why: autograd detects a tensor that was saved for a backward and then changed
// in place by its version. Custom ops get no version bump from the dispatcher's
// fallbacks, so without these kernels `trace_update_(trace, ...)` on a trace
// that some graph saved would make that backward silently use the new values
// instead of raising "modified by an inplace operation". (Measured: before these
// kernels, neither op changed `t._version`; tests/test_fast_calls.py.)
#include <torch/library.h>

#include <c10/core/impl/LocalDispatchKeySet.h>
#include <torch/csrc/autograd/variable.h>

#include "op_handles.h"

namespace ottt {
namespace {

void trace_update_inplace_view(at::Tensor& trace, const at::Tensor& s, double decay) {
  static const auto op = handle<TraceUpdateInplaceSig>("ottt_cuda::trace_update_");
  {
    at::AutoDispatchBelowADInplaceOrView below;
    op.call(trace, s, decay);
  }
  torch::autograd::impl::bump_version(trace);
}

void outer_accumulate_inplace_view(at::Tensor& grad_w, const at::Tensor& g, const at::Tensor& a, double alpha) {
  static const auto op = handle<OuterSig>("ottt_cuda::outer_accumulate_");
  {
    at::AutoDispatchBelowADInplaceOrView below;
    op.call(grad_w, g, a, alpha);
  }
  torch::autograd::impl::bump_version(grad_w);
}

}  // namespace

TORCH_LIBRARY_IMPL(ottt_cuda, ADInplaceOrView, m) {
  m.impl("trace_update_", &trace_update_inplace_view);
  m.impl("outer_accumulate_", &outer_accumulate_inplace_view);
}

}  // namespace ottt
