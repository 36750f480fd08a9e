// ottt_cuda._C.fast: the ops of torch.ops.ottt_cuda called from Python without
// torch.ops' boxed call, for the package's eager fast paths (ottt_cuda/ops.py,
// _Compiled).
//
// Why: a torch.ops call from Python converts every argument into an IValue
// stack and unboxes it again (~2 us per call; lif_step_fwd past its Python
// autograd ~7 us with the guard's context manager), which at batch 1 is as
// much as the kernel. These functions take the arguments through pybind11 and
// call the same registered op through its typed handle, so the dispatcher
// still picks the CPU or CUDA kernel, runs the same checks and raises the same
// errors (torch translates c10::ValueError / TypeError into Python's): 0.7-0.8 us
// for outer_accumulate_ and ~3 us for lif_step_fwd (benchmarks/results/kernels_cpu.md).
//
// Not for code that torch.compile traces (it cannot see into them) nor for
// inputs autograd must track: the Python wrappers call them only where
// ops._compiled_serves holds and autograd has nothing to record, exactly where
// they called the OpOverloads before. The ops whose Python wrappers went past
// their Python autograd kernel (lif_step_fwd, lif_multistep_fwd, trace_update:
// ops._past_autograd) do so here with the same guard; the others go through
// the full dispatcher as before. The GIL is released while the op runs, as
// torch's own bindings do.
#include <torch/extension.h>

#include <string>

#include "op_handles.h"

namespace ottt {
namespace {

Tensor4 lif_step_fwd(const at::Tensor& x, const OptTensor& v, const OptTensor& trace, const OptTensor& mask,
                     double tau, double v_th, c10::optional<double> v_reset, bool decay_input, double trace_decay,
                     const std::string& surrogate, double alpha, bool save_h) {
  static const auto op = handle<LifStepFwdSig>("ottt_cuda::lif_step_fwd");
  at::AutoDispatchBelowAutograd below;  // past the Python autograd kernel, as ops._past_autograd
  return op.call(x, v, trace, mask, tau, v_th, v_reset, decay_input, trace_decay, surrogate, alpha, save_h);
}

at::Tensor lif_step_bwd(const at::Tensor& grad_spike, const at::Tensor& h, const OptTensor& mask, double tau,
                        double v_th, bool decay_input, const std::string& surrogate, double alpha) {
  static const auto op = handle<LifStepBwdSig>("ottt_cuda::lif_step_bwd");
  return op.call(grad_spike, h, mask, tau, v_th, decay_input, surrogate, alpha);
}

Tensor3 lif_multistep_fwd(const at::Tensor& x_seq, const OptTensor& v0, double tau, double v_th,
                          c10::optional<double> v_reset, bool decay_input, const std::string& surrogate, double alpha,
                          bool save_h, bool detach_reset) {
  static const auto op = handle<LifMultistepFwdSig>("ottt_cuda::lif_multistep_fwd");
  at::AutoDispatchBelowAutograd below;
  return op.call(x_seq, v0, tau, v_th, v_reset, decay_input, surrogate, alpha, save_h, detach_reset);
}

Tensor2 lif_multistep_bwd(const at::Tensor& grad_spike_seq, const OptTensor& grad_v_last, const at::Tensor& h_seq,
                          double tau, double v_th, c10::optional<double> v_reset, bool decay_input,
                          const std::string& surrogate, double alpha, bool detach_reset) {
  static const auto op = handle<LifMultistepBwdSig>("ottt_cuda::lif_multistep_bwd");
  return op.call(grad_spike_seq, grad_v_last, h_seq, tau, v_th, v_reset, decay_input, surrogate, alpha, detach_reset);
}

at::Tensor trace_update(const OptTensor& trace, const at::Tensor& s, double decay) {
  static const auto op = handle<TraceUpdateSig>("ottt_cuda::trace_update");
  at::AutoDispatchBelowAutograd below;
  return op.call(trace, s, decay);
}

void trace_update_(at::Tensor& trace, const at::Tensor& s, double decay) {
  static const auto op = handle<TraceUpdateInplaceSig>("ottt_cuda::trace_update_");
  op.call(trace, s, decay);
}

void outer_accumulate_(at::Tensor& grad_w, const at::Tensor& g, const at::Tensor& a, double alpha) {
  static const auto op = handle<OuterSig>("ottt_cuda::outer_accumulate_");
  op.call(grad_w, g, a, alpha);
}

}  // namespace

void register_fast_calls(pybind11::module_& parent) {
  namespace py = pybind11;
  auto m = parent.def_submodule("fast", "torch.ops.ottt_cuda's ops without the boxed call (see csrc/fast_calls.cpp)");
  const auto nogil = py::call_guard<py::gil_scoped_release>();
  m.def("lif_step_fwd", &lif_step_fwd, nogil);
  m.def("lif_step_bwd", &lif_step_bwd, nogil);
  // detach_reset last and optional, as in the schemas (ottt_cuda._registration passes it by keyword)
  m.def("lif_multistep_fwd", &lif_multistep_fwd, nogil, py::arg("x_seq"), py::arg("v0"), py::arg("tau"),
        py::arg("v_th"), py::arg("v_reset"), py::arg("decay_input"), py::arg("surrogate"), py::arg("alpha"),
        py::arg("save_h"), py::arg("detach_reset") = true);
  m.def("lif_multistep_bwd", &lif_multistep_bwd, nogil, py::arg("grad_spike_seq"), py::arg("grad_v_last"),
        py::arg("h_seq"), py::arg("tau"), py::arg("v_th"), py::arg("v_reset"), py::arg("decay_input"),
        py::arg("surrogate"), py::arg("alpha"), py::arg("detach_reset") = true);
  m.def("trace_update", &trace_update, nogil);
  m.def("trace_update_", &trace_update_, nogil);
  m.def("outer_accumulate_", &outer_accumulate_, nogil);
}

}  // namespace ottt
