// CPU kernels of the presynaptic trace a = decay * a + s (out of place and in place).
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "../op_inputs.h"

namespace ottt {
namespace {

constexpr int64_t kGrain = 32768;

// out = decay * a + s over contiguous buffers; a may be null (a zero trace).
void trace_kernel(const at::Tensor& out, const at::Tensor& a, const at::Tensor& s, double decay) {
  const int64_t n = s.numel();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, s.scalar_type(), "trace_update_cpu", [&] {
    using opmath_t = at::opmath_type<scalar_t>;
    const opmath_t d = static_cast<opmath_t>(decay);
    const scalar_t* ap = a.defined() ? a.data_ptr<scalar_t>() : nullptr;
    const scalar_t* sp = s.data_ptr<scalar_t>();
    scalar_t* op = out.data_ptr<scalar_t>();
    at::parallel_for(0, n, kGrain, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i)
        op[i] = static_cast<scalar_t>(trace_step(ap ? opmath_t(ap[i]) : opmath_t(0), opmath_t(sp[i]), d));
    });
  });
}

at::Tensor trace_update_cpu(const c10::optional<at::Tensor>& trace, const at::Tensor& s, double decay) {
  return trace_update_with(trace, s, decay, trace_kernel);
}

void trace_update_inplace_cpu(at::Tensor& trace, const at::Tensor& s, double decay) {
  trace_update_inplace_with(trace, s, decay, trace_kernel);
}

}  // namespace

TORCH_LIBRARY_IMPL(ottt_cuda, CPU, m) {
  m.impl("trace_update", &trace_update_cpu);
  m.impl("trace_update_", &trace_update_inplace_cpu);
}

}  // namespace ottt
