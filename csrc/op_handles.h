// Typed dispatcher handles of the ottt_cuda ops, for C++ that calls a registered
// op (csrc/fast_calls.cpp, csrc/inplace_versions.cpp): the kernels' C++
// signatures, written once, and the lookup.
#pragma once

#include <ATen/ATen.h>
#include <ATen/core/LegacyTypeDispatch.h>  // AutoDispatchBelow* guards (torch 2.11 does not reach it otherwise)
#include <ATen/core/dispatch/Dispatcher.h>

#include <tuple>

namespace ottt {

using OptTensor = c10::optional<at::Tensor>;
using Tensor4 = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor>;
using Tensor3 = std::tuple<at::Tensor, at::Tensor, at::Tensor>;
using Tensor2 = std::tuple<at::Tensor, at::Tensor>;

using LifStepFwdSig = Tensor4(const at::Tensor&, const OptTensor&, const OptTensor&, const OptTensor&, double,
                              double, c10::optional<double>, bool, double, c10::string_view, double, bool);
using LifStepBwdSig = at::Tensor(const at::Tensor&, const at::Tensor&, const OptTensor&, double, double, bool,
                                 c10::string_view, double);
using LifMultistepFwdSig = Tensor3(const at::Tensor&, const OptTensor&, double, double, c10::optional<double>, bool,
                                   c10::string_view, double, bool, bool);
using LifMultistepBwdSig = Tensor2(const at::Tensor&, const OptTensor&, const at::Tensor&, double, double,
                                   c10::optional<double>, bool, c10::string_view, double, bool);
using TraceUpdateSig = at::Tensor(const OptTensor&, const at::Tensor&, double);
using TraceUpdateInplaceSig = void(at::Tensor&, const at::Tensor&, double);
using OuterSig = void(at::Tensor&, const at::Tensor&, const at::Tensor&, double);

// The typed handle of ottt_cuda::<name>; callers keep it in a function-local static (looked
// up once, thread-safe initialization). Sig must be the kernels' C++ signature; the
// dispatcher checks it on the lookup.
template <typename Sig>
c10::TypedOperatorHandle<Sig> handle(const char* name) {
  return c10::Dispatcher::singleton().findSchemaOrThrow(name, "").typed<Sig>();
}

}  // namespace ottt
