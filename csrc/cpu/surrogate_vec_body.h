// The vector surrogate backward, written once for every vector width: sg(z) on a
// vector (surrogate_grad_vec) and the loop grad_x = grad (* mask) * sg(z) * in_scale
// (lif_step_bwd_range). Included INSIDE an ISA namespace (ottt::avx2 in
// surrogate_avx2.h, ottt::avx512 in sigmoid_bwd_avx512.cpp), after that unit has
// included ATen/cpu/vec under its target pragma: at::vec::Vectorized is then that
// ISA's type (8 float lanes with AVX2, 16 with AVX-512) and the same source
// compiles to each. Why not a plain template header: a translation unit fixes its
// Vectorized once, at its first include of ATen/cpu/vec, so each width needs its own
// unit and its own namespace (one definition per ISA, no ODR clash).
//
// No #pragma once, no includes: it is text for the namespace that includes it,
// which must provide Surrogate and surrogate_grad (ottt_math.h) in scope.

using at::vec::Vectorized;

// sg(z) on a vector; each case mirrors surrogate_grad (ottt_math.h) term by term.
template <Surrogate K, typename T>
inline Vectorized<T> surrogate_grad_vec(Vectorized<T> z, T alpha) {
  using V = Vectorized<T>;
  if constexpr (K == Surrogate::Sigmoid) {
    // exp_u20: ATen's polynomial exp (the one its softmax/attention kernels use),
    // ~2.4e-6 relative error for float, where Sleef's exp (u10) cost half of this
    // loop's time (1.0 -> 0.5 ms per 2^20 floats). sg (1 - sg) has relative
    // sensitivity <= 1 to exp's error, well inside float32's test tolerance
    // (rtol 1e-5). For double exp_u20 is Sleef's exp.
    const V sg = (V(T(1)) + (V(-alpha) * z).exp_u20()).reciprocal();
    // exp_u20 clamps its argument, which turns a NaN into a finite number: keep the
    // NaN of a NaN membrane, as the scalar formula (and the reference) do.
    return V::blendv(V(alpha) * sg * (V(T(1)) - sg), z, z.isnan());
  } else if constexpr (K == Surrogate::ATan) {
    const V k = V(T(1.5707963267948966) * alpha) * z;
    return V(alpha) / (V(T(2)) * (V(T(1)) + k * k));
  } else if constexpr (K == Surrogate::Triangle) {
    // fmax(x, 0) of the scalar code: 0 wins over NaN there; blendv keeps that.
    const V r = V(T(1)) - V(alpha) * z.abs();
    return V(alpha) * V::blendv(V(T(0)), r, r > V(T(0)));
  } else {
    return (z.abs() < V(T(0.5) / alpha)) & V(alpha);  // the compare is an all-ones mask
  }
}

// grad_x[i] = grad[i] (* mask[i]) * sg(z[i]) * in_scale for i in [begin, end);
// the tail shorter than one vector runs the scalar formula.
template <Surrogate K, bool HasMask, typename T>
__attribute__((noinline)) void lif_step_bwd_range(const T* zp, const T* gp, const T* mp, T* op, T alpha,
                                                   T in_scale, int64_t begin, int64_t end) {
  using V = Vectorized<T>;
  constexpr int64_t W = V::size();
  int64_t i = begin;
  for (; i + W <= end; i += W) {
    V gs = V::loadu(gp + i);
    if constexpr (HasMask) gs = gs * V::loadu(mp + i);
    (gs * surrogate_grad_vec<K, T>(V::loadu(zp + i), alpha) * V(in_scale)).store(op + i);
  }
  for (; i < end; ++i) {
    T gs = gp[i];
    if constexpr (HasMask) gs *= mp[i];
    op[i] = gs * surrogate_grad(K, zp[i], alpha) * in_scale;
  }
}
