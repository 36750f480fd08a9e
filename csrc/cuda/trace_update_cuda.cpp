// CUDA launch code of the presynaptic trace a = decay * a + s (out of place
// and in place): the tensor handling of csrc/cpu/trace_update_cpu.cpp.
#include <torch/library.h>

#include "host_utils.h"

namespace ottt {
namespace {

// out = decay * a + s over contiguous buffers on the current device; a may be
// undefined (a zero trace) or the same tensor as out.
void trace_kernel(const at::Tensor& out, const at::Tensor& a, const at::Tensor& s, double decay) {
  const int64_t n = s.numel();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, s.scalar_type(), "trace_update_cuda", [&] {
    assert_same_opmath<scalar_t>();
    using opmath_t = at::opmath_type<scalar_t>;
    if (n == 0) return;
    gpu::launch_trace_update<scalar_t>(ptr_or_null<scalar_t>(a), s.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(),
                                       n, static_cast<opmath_t>(decay), current_stream());
    OTTT_KERNEL_LAUNCH_CHECK();
  });
}

at::Tensor trace_update_cuda(const c10::optional<at::Tensor>& trace, const at::Tensor& s, double decay) {
  check_cuda(s, "s");
  const DeviceGuard guard(s.device());
  return trace_update_with(trace, s, decay, trace_kernel);
}

void trace_update_inplace_cuda(at::Tensor& trace, const at::Tensor& s, double decay) {
  check_cuda(trace, "trace");
  const DeviceGuard guard(trace.device());
  trace_update_inplace_with(trace, s, decay, trace_kernel);
}

}  // namespace

OTTT_CUDA_LIBRARY_IMPL(m) {
  m.impl("trace_update", &trace_update_cuda);
  m.impl("trace_update_", &trace_update_inplace_cuda);
}

}  // namespace ottt
