// Per-element arithmetic of the LIF neuron, its surrogate derivatives and the
// presynaptic trace. Included by the CPU kernels (g++), the CUDA kernels (nvcc)
// and the host test (ctest), so every backend runs the very same formulas.
//
// Conventions (docs/design.md, section 1 "The maths"):
//   charge  h = decay * v + in_scale * x + bias
//           decay = 1 - 1/tau; in_scale = 1 (or 1/tau with decay_input);
//           bias = v_reset / tau for a hard reset (SpikingJelly's LIF form), else 0
//   fire    s = (h >= v_th)
//   reset   soft: v = h - v_th * s ; hard: v = s ? v_reset : h
//   trace   a = trace_decay * a + s
// All arithmetic runs in `T`, the op-math type (float for half/bfloat16).
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>

#if defined(__CUDACC__) || defined(__HIPCC__)
#define OTTT_HD __host__ __device__ __forceinline__
#else
#define OTTT_HD inline
#endif

namespace ottt {

// Branch-free selects. GCC compiles `b ? 1.0f : 0.0f` (and static_cast<float>(b))
// on floats into a jump; spikes are random, so half of those jumps mispredict
// and the loop does not vectorize (8x slower, measured). A bit mask does
// neither. On the GPU a select is predicated anyway.
template <typename T>
OTTT_HD T branchless_select(bool b, T if_true, T if_false) {
#if defined(__CUDA_ARCH__)
  return b ? if_true : if_false;
#else
  using U = std::conditional_t<sizeof(T) == 8, std::uint64_t, std::uint32_t>;
  static_assert(sizeof(T) == sizeof(U), "select works on float and double");
  const U mask = U(0) - static_cast<U>(b);
  U t, f;
  std::memcpy(&t, &if_true, sizeof(T));
  std::memcpy(&f, &if_false, sizeof(T));
  const U bits = (t & mask) | (f & ~mask);
  T out;
  std::memcpy(&out, &bits, sizeof(T));
  return out;
#endif
}

// Surrogate ids; the string names live in csrc/common.h (parse_surrogate).
enum class Surrogate : int { Sigmoid = 0, ATan = 1, Triangle = 2, Rectangle = 3 };

// Neuron constants derived once on the host from the user's (tau, v_th,
// v_reset, decay_input); kernels only see these.
template <typename T>
struct LIFCoeffs {
  T decay;      // dh/dv[t-1]
  T in_scale;   // dh/dx
  T bias;       // constant part of the charge (hard reset only)
  T v_th;
  T v_reset;
  bool hard_reset;
};

template <typename T>
inline LIFCoeffs<T> make_lif_coeffs(double tau, double v_th, bool has_v_reset,
                                     double v_reset, bool decay_input) {
  LIFCoeffs<T> c;
  c.decay = static_cast<T>(1.0 - 1.0 / tau);
  c.in_scale = static_cast<T>(decay_input ? 1.0 / tau : 1.0);
  c.bias = static_cast<T>(has_v_reset ? v_reset / tau : 0.0);
  c.v_th = static_cast<T>(v_th);
  c.v_reset = static_cast<T>(has_v_reset ? v_reset : 0.0);
  c.hard_reset = has_v_reset;
  return c;
}

template <typename T>
OTTT_HD T charge(const LIFCoeffs<T>& c, T v, T x) {
  return c.decay * v + c.in_scale * x + c.bias;
}

template <typename T>
OTTT_HD T fire(const LIFCoeffs<T>& c, T h) {
  return branchless_select(h >= c.v_th, T(1), T(0));
}

// The same decision from z = h - v_th. Kernels save z (not h) for backward:
// rounding z to fp16/bf16 never changes its sign, so backward recovers exactly
// the spikes forward fired, and z keeps the most precision near threshold,
// where the surrogate is largest.
template <typename T>
OTTT_HD T fire_from_z(T z) {
  return branchless_select(z >= T(0), T(1), T(0));
}

template <typename T>
OTTT_HD T reset(const LIFCoeffs<T>& c, T h, T s) {
  return c.hard_reset ? branchless_select(s != T(0), c.v_reset, h) : h - c.v_th * s;
}

// d v[t] / d h[t] with the spike (the reset) detached: 1 for a soft reset,
// 1 - s for a hard one. Used by the BPTT recurrence.
template <typename T>
OTTT_HD T dreset_dh(const LIFCoeffs<T>& c, T s) {
  return c.hard_reset ? T(1) - s : T(1);
}

// d v[t] / d h[t] with the reset kept in the graph (BPTT with
// detach_reset=False, SpikingJelly's default): the spike's own dependence on h
// adds (dv/ds) * sg(z), sg the surrogate derivative at z = h - v_th:
//   soft  v = h - v_th s              -> 1 - v_th sg(z)
//   hard  v = h (1 - s) + v_reset s   -> (1 - s) + (v_reset - h) sg(z), h = z + v_th
template <typename T>
OTTT_HD T dreset_dh_attached(const LIFCoeffs<T>& c, T z, T sg) {
  return c.hard_reset ? (T(1) - fire_from_z(z)) + (c.v_reset - (z + c.v_th)) * sg : T(1) - c.v_th * sg;
}

template <typename T>
OTTT_HD T trace_step(T a, T s, T trace_decay) {
  return trace_decay * a + s;
}

// Surrogate derivative sg(z) of the Heaviside step, z = h - v_th. Each one
// integrates to 1 over the real line; `alpha` sets its sharpness.
//   sigmoid   : primitive sigmoid(alpha z)
//   atan      : primitive atan(pi/2 alpha z)/pi + 1/2
//   triangle  : alpha * max(0, 1 - alpha |z|)        (piecewise linear)
//   rectangle : alpha on |z| < 1/(2 alpha), else 0
template <typename T>
OTTT_HD T surrogate_grad(Surrogate kind, T z, T alpha) {
  using std::exp;
  using std::fabs;
  using std::fmax;
  switch (kind) {
    case Surrogate::Sigmoid: {
      const T sg = T(1) / (T(1) + exp(-alpha * z));
      return alpha * sg * (T(1) - sg);
    }
    case Surrogate::ATan: {
      const T k = T(1.5707963267948966) * alpha * z;
      return alpha / (T(2) * (T(1) + k * k));
    }
    case Surrogate::Triangle:
      return alpha * fmax(T(1) - alpha * fabs(z), T(0));
    case Surrogate::Rectangle:
    default:
      return branchless_select(fabs(z) < T(0.5) / alpha, alpha, T(0));
  }
}

// The primitives above, for the host test's finite differences.
template <typename T>
inline T surrogate_primitive(Surrogate kind, T z, T alpha) {
  switch (kind) {
    case Surrogate::Sigmoid:
      return T(1) / (T(1) + std::exp(-alpha * z));
    case Surrogate::ATan:
      return std::atan(T(1.5707963267948966) * alpha * z) / T(3.141592653589793) + T(0.5);
    case Surrogate::Triangle: {
      const T u = alpha * z;
      if (u <= T(-1)) return T(0);
      if (u >= T(1)) return T(1);
      return u < T(0) ? T(0.5) * (T(1) + u) * (T(1) + u) : T(1) - T(0.5) * (T(1) - u) * (T(1) - u);
    }
    case Surrogate::Rectangle:
    default: {
      const T u = alpha * z + T(0.5);
      return u < T(0) ? T(0) : (u > T(1) ? T(1) : u);
    }
  }
}

}  // namespace ottt
