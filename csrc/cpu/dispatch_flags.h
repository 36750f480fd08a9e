// Turns runtime choices (up to four booleans; the surrogate) into compile-time
// ones. Four runtime booleans into compile-time ones
// (std::integral_constant<bool, ...>), so a CPU kernel's inner loop is
// instantiated once per combination of optional tensors and carries no
// per-element branches on them (which would block auto-vectorization).
#pragma once

#include <type_traits>

#include "../ottt_math.h"

namespace ottt {

// dispatch_bool(flag, f) calls f(std::integral_constant<bool, flag>{}).
template <typename F>
void dispatch_bool(bool flag, F&& f) {
  if (flag) f(std::true_type{});
  else f(std::false_type{});
}

// dispatch_flags(a, b, c, d, f) calls f(integral_constant<bool, a>{}, ...).
template <typename F>
void dispatch_flags(bool a, bool b, bool c, bool d, F&& f) {
  dispatch_bool(a, [&](auto A) {
    dispatch_bool(b, [&](auto B) {
      dispatch_bool(c, [&](auto C) {
        dispatch_bool(d, [&](auto D) { f(A, B, C, D); });
      });
    });
  });
}

}  // namespace ottt

namespace ottt {

// Calls f(std::integral_constant<Surrogate, kind>{}): the surrogate becomes a
// constant in the loop, so its switch folds away and the loop can vectorize.
template <typename F>
void dispatch_surrogate(Surrogate kind, F&& f) {
  switch (kind) {
    case Surrogate::Sigmoid: f(std::integral_constant<Surrogate, Surrogate::Sigmoid>{}); break;
    case Surrogate::ATan: f(std::integral_constant<Surrogate, Surrogate::ATan>{}); break;
    case Surrogate::Triangle: f(std::integral_constant<Surrogate, Surrogate::Triangle>{}); break;
    default: f(std::integral_constant<Surrogate, Surrogate::Rectangle>{}); break;
  }
}

}  // namespace ottt
