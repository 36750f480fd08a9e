// Host test of csrc/ottt_math.h, the per-element math shared by the CPU and
// CUDA kernels. Needs only that header (no torch); built by CMakeLists.txt and
// run by ctest. Every check compares the header against formulas written here
// independently (closed forms, finite differences, quadrature, hand-worked
// sequences), in float and double.
//
// Prints "test_math: N checks passed, M failed" and exits non-zero if M > 0.
#include <cmath>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <vector>

#include "ottt_math.h"

namespace {

using ottt::Surrogate;

int g_passed = 0;
int g_failed = 0;
constexpr int kMaxReports = 50;

#if defined(__GNUC__)
__attribute__((format(printf, 2, 3)))
#endif
void check(bool ok, const char* fmt, ...) {
  if (ok) {
    ++g_passed;
    return;
  }
  ++g_failed;
  if (g_failed > kMaxReports) return;
  std::va_list ap;
  va_start(ap, fmt);
  std::fputs("FAIL: ", stderr);
  std::vfprintf(stderr, fmt, ap);
  std::fputc('\n', stderr);
  va_end(ap);
}

bool near(long double got, long double want, long double rtol, long double atol) {
  return std::isfinite(static_cast<double>(got)) && std::fabs(got - want) <= atol + rtol * std::fabs(want);
}

template <typename T>
const char* tname();
template <>
const char* tname<float>() { return "float"; }
template <>
const char* tname<double>() { return "double"; }

const char* sname(Surrogate k) {
  switch (k) {
    case Surrogate::Sigmoid: return "sigmoid";
    case Surrogate::ATan: return "atan";
    case Surrogate::Triangle: return "triangle";
    case Surrogate::Rectangle: return "rectangle";
  }
  return "?";
}

constexpr Surrogate kKinds[] = {Surrogate::Sigmoid, Surrogate::ATan, Surrogate::Triangle, Surrogate::Rectangle};
constexpr double kAlphas[] = {0.5, 1.0, 2.0, 4.0, 10.0};
constexpr long double kPi = 3.141592653589793238462643383279502884L;

// Tolerances per type.
template <typename T>
struct Tol;
template <>
struct Tol<float> {
  static constexpr double fd_step = 2.5e-4;  // < kink skip radius 1e-3
  static constexpr double fd_rtol = 2e-3, fd_atol = 1e-3;
  static constexpr double ref_rtol = 2e-5, ref_atol = 1e-6;  // times alpha
  static constexpr double quad_tol = 1e-6;
  static constexpr double arith_rtol = 1e-5, arith_atol = 1e-5;
};
template <>
struct Tol<double> {
  static constexpr double fd_step = 1e-5;
  static constexpr double fd_rtol = 1e-6, fd_atol = 1e-7;
  static constexpr double ref_rtol = 1e-12, ref_atol = 1e-15;
  static constexpr double quad_tol = 1e-7;
  static constexpr double arith_rtol = 1e-13, arith_atol = 1e-13;
};

// ---------------------------------------------------------------------------
// Surrogates: independent reference formulas (long double).
long double ref_grad(Surrogate k, long double z, long double a) {
  switch (k) {
    case Surrogate::Sigmoid: {  // d/dz sigmoid(a z) = a / (4 cosh^2(a z / 2))
      const long double c = std::cosh(a * z / 2);
      return std::isinf(static_cast<double>(c)) ? 0.0L : a / (4 * c * c);
    }
    case Surrogate::ATan: {  // d/dz [atan(pi/2 a z)/pi + 1/2]
      const long double u = kPi / 2 * a * z;
      return a / (2 * (1 + u * u));
    }
    case Surrogate::Triangle:
      return std::fmax(0.0L, a - a * a * std::fabs(z));
    case Surrogate::Rectangle:
      return 2 * a * std::fabs(z) < 1 ? a : 0.0L;
  }
  return NAN;
}

// Points where the surrogate derivative is not smooth.
bool near_kink(Surrogate k, double z, double a) {
  constexpr double r = 1e-3;
  if (k == Surrogate::Triangle) return std::fabs(z) < r || std::fabs(std::fabs(z) - 1.0 / a) < r;
  if (k == Surrogate::Rectangle) return std::fabs(std::fabs(z) - 0.5 / a) < r;
  return false;
}

// Sample points: a dense grid over the bulk of the surrogate plus far tails.
std::vector<double> z_points(double a) {
  std::vector<double> zs;
  const double span = 6.0 / a + 1.0;
  const int n = 2000;
  for (int i = 0; i <= n; ++i) zs.push_back(-span + 2.0 * span * i / n);
  for (double z : {8.0, 20.0, 50.0, 300.0, 1e4}) {
    zs.push_back(z);
    zs.push_back(-z);
  }
  return zs;
}

template <typename T>
void test_surrogate_pointwise() {
  using Tl = Tol<T>;
  for (Surrogate k : kKinds) {
    for (double ad : kAlphas) {
      const T a = static_cast<T>(ad);
      for (double zd : z_points(ad)) {
        const T z = static_cast<T>(zd);
        const T g = ottt::surrogate_grad<T>(k, z, a);
        // 1. the closed form
        if (!near_kink(k, zd, ad)) {
          const long double want = ref_grad(k, static_cast<long double>(z), static_cast<long double>(a));
          check(near(g, want, Tl::ref_rtol, Tl::ref_atol * ad), "%s %s a=%g z=%.9g: grad %.12g, formula %.12Lg",
                tname<T>(), sname(k), ad, zd, static_cast<double>(g), want);
        }
        // 2. central finite difference of the primitive (the step stays off the kinks)
        // The step grows with |z| where the type's spacing would swallow fd_step;
        // the kinks are all at |z| <= 2, where the step is fd_step < 1e-3.
        const double step = std::fmax(Tl::fd_step, 1024 * std::numeric_limits<T>::epsilon() * std::fabs(zd));
        if (!near_kink(k, zd, ad)) {
          const T zp = z + static_cast<T>(step);
          const T zm = z - static_cast<T>(step);
          const double fd = (static_cast<double>(ottt::surrogate_primitive<T>(k, zp, a)) -
                             static_cast<double>(ottt::surrogate_primitive<T>(k, zm, a))) /
                            (static_cast<double>(zp) - static_cast<double>(zm));
          check(near(g, fd, Tl::fd_rtol, Tl::fd_atol), "%s %s a=%g z=%.9g: grad %.9g, finite difference %.9g",
                tname<T>(), sname(k), ad, zd, static_cast<double>(g), fd);
        }
        // 3. non-negative and even
        const T gm = ottt::surrogate_grad<T>(k, static_cast<T>(-z), a);
        check(g >= T(0), "%s %s a=%g z=%.9g: grad %.9g < 0", tname<T>(), sname(k), ad, zd, static_cast<double>(g));
        if (!near_kink(k, zd, ad))
          check(near(g, gm, Tl::ref_rtol * 10, Tl::ref_atol * ad), "%s %s a=%g z=%.9g: grad(z) %.9g != grad(-z) %.9g",
                tname<T>(), sname(k), ad, zd, static_cast<double>(g), static_cast<double>(gm));
        // 4. primitive in [0, 1] and odd around 1/2
        const T p = ottt::surrogate_primitive<T>(k, z, a);
        const T pm = ottt::surrogate_primitive<T>(k, static_cast<T>(-z), a);
        check(p >= T(0) && p <= T(1), "%s %s a=%g z=%.9g: primitive %.9g outside [0,1]", tname<T>(), sname(k), ad, zd,
              static_cast<double>(p));
        check(near(static_cast<double>(p) + static_cast<double>(pm), 1.0, 0.0, 4 * std::numeric_limits<T>::epsilon()),
              "%s %s a=%g z=%.9g: P(z) + P(-z) = %.9g, expected 1", tname<T>(), sname(k), ad, zd,
              static_cast<double>(p) + static_cast<double>(pm));
      }
      // Peak value at z = 0 and the limits of the primitive.
      const double peak = k == Surrogate::Sigmoid ? ad / 4 : k == Surrogate::ATan ? ad / 2 : ad;
      check(near(ottt::surrogate_grad<T>(k, T(0), a), peak, Tl::ref_rtol, 0), "%s %s a=%g: grad(0) %.9g, expected %.9g",
            tname<T>(), sname(k), ad, static_cast<double>(ottt::surrogate_grad<T>(k, T(0), a)), peak);
      check(near(ottt::surrogate_primitive<T>(k, T(0), a), 0.5, 0, 2 * std::numeric_limits<T>::epsilon()),
            "%s %s a=%g: primitive(0) %.9g, expected 0.5", tname<T>(), sname(k), ad,
            static_cast<double>(ottt::surrogate_primitive<T>(k, T(0), a)));
      check(near(ottt::surrogate_primitive<T>(k, T(-1e6), a), 0.0, 0, 1e-5), "%s %s a=%g: primitive(-1e6) %.9g",
            tname<T>(), sname(k), ad, static_cast<double>(ottt::surrogate_primitive<T>(k, T(-1e6), a)));
      check(near(ottt::surrogate_primitive<T>(k, T(1e6), a), 1.0, 0, 1e-5), "%s %s a=%g: primitive(1e6) %.9g",
            tname<T>(), sname(k), ad, static_cast<double>(ottt::surrogate_primitive<T>(k, T(1e6), a)));
    }
  }
}

// Integral of surrogate_grad<T> over (-inf, upper), by the midpoint rule after
// z = tan(theta), which maps the real line onto (-pi/2, pi/2) and keeps the
// heavy atan tail finite. The theta range is split at the kinks of triangle and
// rectangle (their positions from the formulas above, not from the header), so
// that every piece is smooth and the rule converges fast.
template <typename T>
double integrate_grad(Surrogate k, T a, double upper) {
  const double pi = static_cast<double>(kPi);
  const double ad = static_cast<double>(a);
  std::vector<double> cuts = {-pi / 2};
  std::vector<double> kinks;
  if (k == Surrogate::Triangle) kinks = {-1.0 / ad, 0.0, 1.0 / ad};
  if (k == Surrogate::Rectangle) kinks = {-0.5 / ad, 0.5 / ad};
  for (double z : kinks)
    if (z < upper) cuts.push_back(std::atan(z));
  cuts.push_back(std::isinf(upper) ? pi / 2 : std::atan(upper));
  const int n = 20000;
  double total = 0;
  for (std::size_t piece = 0; piece + 1 < cuts.size(); ++piece) {
    const double lo = cuts[piece], h = (cuts[piece + 1] - lo) / n;
    double sum = 0;
    for (int i = 0; i < n; ++i) {
      const double th = lo + (i + 0.5) * h;
      const double c = std::cos(th);
      sum += static_cast<double>(ottt::surrogate_grad<T>(k, static_cast<T>(std::tan(th)), a)) / (c * c);
    }
    total += sum * h;
  }
  return total;
}

template <typename T>
void test_surrogate_integrals() {
  for (Surrogate k : kKinds) {
    for (double ad : kAlphas) {
      const T a = static_cast<T>(ad);
      const double total = integrate_grad<T>(k, a, INFINITY);
      check(near(total, 1.0L, 0, Tol<T>::quad_tol), "%s %s a=%g: integral of grad over R = %.12g, expected 1",
            tname<T>(), sname(k), ad, total);
      // Cumulative integral up to z0 must reproduce the primitive.
      for (double u : {-1.0, -0.3, 0.0, 0.7, 2.0}) {
        const double z0 = u / ad;
        const double part = integrate_grad<T>(k, a, z0);
        const double p = static_cast<double>(ottt::surrogate_primitive<T>(k, static_cast<T>(z0), a));
        check(near(part, p, 0, Tol<T>::quad_tol), "%s %s a=%g: integral of grad up to %g = %.12g, primitive %.12g",
              tname<T>(), sname(k), ad, z0, part, p);
      }
    }
  }
}

// ---------------------------------------------------------------------------
// Neuron: charge, fire, reset.

// Deterministic uniform numbers in [lo, hi).
struct Lcg {
  std::uint64_t s = 0x9E3779B97F4A7C15ull;
  double next(double lo, double hi) {
    s = s * 6364136223846793005ull + 1442695040888963407ull;
    return lo + (hi - lo) * static_cast<double>(s >> 11) * (1.0 / 9007199254740992.0);
  }
};

template <typename T>
void test_coeffs() {
  const double eps = std::numeric_limits<T>::epsilon();
  // tau = 2: decay 1/2, input scale 1 (1/2 with decay_input), bias v_reset/2 for a hard reset.
  {
    const auto c = ottt::make_lif_coeffs<T>(2.0, 1.0, false, 0.0, false);
    check(c.decay == T(0.5) && c.in_scale == T(1) && c.bias == T(0) && !c.hard_reset && c.v_th == T(1),
          "%s tau=2 soft: decay %g in_scale %g bias %g hard %d", tname<T>(), double(c.decay), double(c.in_scale),
          double(c.bias), int(c.hard_reset));
  }
  {
    const auto c = ottt::make_lif_coeffs<T>(2.0, 1.0, false, 0.0, true);
    check(c.decay == T(0.5) && c.in_scale == T(0.5) && c.bias == T(0),
          "%s tau=2 soft decay_input: decay %g in_scale %g bias %g", tname<T>(), double(c.decay), double(c.in_scale),
          double(c.bias));
  }
  {
    const auto c = ottt::make_lif_coeffs<T>(2.0, 1.0, true, -0.5, false);
    check(c.decay == T(0.5) && c.in_scale == T(1) && c.bias == T(-0.25) && c.hard_reset && c.v_reset == T(-0.5),
          "%s tau=2 hard v_reset=-0.5: decay %g in_scale %g bias %g v_reset %g hard %d", tname<T>(), double(c.decay),
          double(c.in_scale), double(c.bias), double(c.v_reset), int(c.hard_reset));
  }
  {
    // v_reset = 0 is still a hard reset (has_v_reset decides, not the value).
    const auto c = ottt::make_lif_coeffs<T>(2.0, 1.5, true, 0.0, true);
    check(c.hard_reset && c.bias == T(0) && c.v_reset == T(0) && c.in_scale == T(0.5) && c.v_th == T(1.5),
          "%s tau=2 hard v_reset=0 decay_input: hard %d bias %g in_scale %g", tname<T>(), int(c.hard_reset),
          double(c.bias), double(c.in_scale));
  }
  {
    // tau = 1: no memory at all.
    const auto c = ottt::make_lif_coeffs<T>(1.0, 1.0, true, 0.25, true);
    check(c.decay == T(0) && c.in_scale == T(1) && c.bias == T(0.25), "%s tau=1: decay %g in_scale %g bias %g",
          tname<T>(), double(c.decay), double(c.in_scale), double(c.bias));
  }
  // General tau: decay = (tau - 1) / tau, i.e. decay * tau + 1 == tau.
  for (double tau : {1.25, 1.5, 3.0, 4.0, 7.0, 10.0, 100.0}) {
    const auto c = ottt::make_lif_coeffs<T>(tau, 1.0, true, -0.3, true);
    check(near(double(c.decay) * tau + 1.0, tau, 4 * eps, 0), "%s tau=%g: decay %.9g", tname<T>(), tau,
          double(c.decay));
    check(near(double(c.in_scale) * tau, 1.0, 4 * eps, 0), "%s tau=%g: in_scale %.9g", tname<T>(), tau,
          double(c.in_scale));
    check(near(double(c.bias) * tau, -0.3, 4 * eps, 0), "%s tau=%g: bias %.9g", tname<T>(), tau, double(c.bias));
  }
}

template <typename T>
void test_neuron_identities() {
  using Tl = Tol<T>;
  Lcg rng;
  const bool has_reset[] = {false, true, true, true};
  const double v_resets[] = {0.0, 0.0, -0.3, 0.2};
  for (double tau : {1.5, 2.0, 4.0, 10.0}) {
    for (double v_th : {0.5, 1.0, 2.0}) {
      for (int r = 0; r < 4; ++r) {
        for (bool decay_input : {false, true}) {
          const bool hard = has_reset[r];
          const double vr = v_resets[r];
          const auto c = ottt::make_lif_coeffs<T>(tau, v_th, hard, vr, decay_input);
          const T th = static_cast<T>(v_th);
          const T vrT = static_cast<T>(vr);
          for (int i = 0; i < 200; ++i) {
            const T v = static_cast<T>(rng.next(-2.0, 3.0));
            const T x = static_cast<T>(rng.next(-2.0, 3.0));
            // Charge, in SpikingJelly's neuronal_charge form (v_reset = 0 for a soft reset):
            //   decay_input: h = v + (x - (v - v_reset)) / tau ;  else h = v - (v - v_reset) / tau + x
            const long double vl = v, xl = x, vrl = hard ? vr : 0.0;
            const long double want_h = decay_input ? vl + (xl - (vl - vrl)) / tau : vl - (vl - vrl) / tau + xl;
            const T h = ottt::charge(c, v, x);
            check(near(h, want_h, Tl::arith_rtol, Tl::arith_atol), "%s charge tau=%g vth=%g hard=%d vr=%g di=%d "
                  "v=%.9g x=%.9g: h %.12g, expected %.12Lg", tname<T>(), tau, v_th, int(hard), vr, int(decay_input),
                  double(v), double(x), double(h), want_h);
            // Fire: s in {0,1}, s == 1 iff h >= v_th.
            const T s = ottt::fire(c, h);
            check((s == T(0) || s == T(1)) && ((s == T(1)) == (h >= th)), "%s fire vth=%g h=%.9g: s=%g", tname<T>(),
                  v_th, double(h), double(s));
            // The decision from z = h - v_th (what backward sees) is the forward one,
            // also after z is rounded to a narrower type (here: float from double).
            const T z = h - th;
            check(ottt::fire_from_z(z) == s && ottt::fire_from_z(T(float(z))) == s,
                  "%s fire_from_z vth=%g h=%.9g", tname<T>(), v_th, double(h));
            // Reset.
            const T vn = ottt::reset(c, h, s);
            if (hard) {
              check(s == T(1) ? vn == vrT : vn == h, "%s hard reset vr=%g h=%.9g s=%g: v=%.9g", tname<T>(), vr,
                    double(h), double(s), double(vn));
            } else {
              const T want_v = h - th * s;
              check(vn == want_v, "%s soft reset vth=%g h=%.9g s=%g: v=%.9g, expected %.9g", tname<T>(), v_th,
                    double(h), double(s), double(vn), double(want_v));
            }
            // dreset_dh: d reset(h, s) / dh with the spike held fixed, by central difference.
            const T d = T(1) / T(64);
            const double fd = (double(ottt::reset(c, T(h + d), s)) - double(ottt::reset(c, T(h - d), s))) /
                              (double(T(h + d)) - double(T(h - d)));
            const T dr = ottt::dreset_dh(c, s);
            const double want_dr = hard ? 1.0 - double(s) : 1.0;
            check(dr == T(want_dr) && near(fd, want_dr, 1e-6, 1e-6), "%s dreset_dh hard=%d s=%g: %g (fd %g, want %g)",
                  tname<T>(), int(hard), double(s), double(dr), fd, want_dr);
            // dreset_dh_attached: the reset is affine in s, so dv/dh through the spike is
            // dv/dh|s (the finite difference above) + (reset(h,1) - reset(h,0)) * sg.
            const T sg = T(0.375);
            const double want_att =
                fd + (double(ottt::reset(c, h, T(1))) - double(ottt::reset(c, h, T(0)))) * double(sg);
            const T att = ottt::dreset_dh_attached(c, z, sg);
            check(near(att, want_att, 1e-5, 1e-5), "%s dreset_dh_attached hard=%d h=%.9g s=%g: %g, want %g",
                  tname<T>(), int(hard), double(h), double(s), double(att), want_att);
          }
          // Threshold boundary: h == v_th fires, the next value below does not.
          const T below = std::nextafter(th, -std::numeric_limits<T>::infinity());
          check(ottt::fire(c, th) == T(1) && ottt::fire(c, below) == T(0), "%s fire at the threshold vth=%g",
                tname<T>(), v_th);
          check(ottt::dreset_dh(c, T(0)) == T(1) && ottt::dreset_dh(c, T(1)) == (hard ? T(0) : T(1)),
                "%s dreset_dh table hard=%d", tname<T>(), int(hard));
        }
      }
    }
  }
}

// Hand-worked three-step sequences (every value exact in binary floating point).
template <typename T>
void run_sequence(const char* what, const ottt::LIFCoeffs<T>& c, T v0, const T (&x)[3], const T (&h_want)[3],
                  const T (&s_want)[3], const T (&v_want)[3]) {
  T v = v0;
  for (int t = 0; t < 3; ++t) {
    const T h = ottt::charge(c, v, x[t]);
    const T s = ottt::fire(c, h);
    v = ottt::reset(c, h, s);
    check(h == h_want[t] && s == s_want[t] && v == v_want[t],
          "%s sequence %s t=%d: h %.9g s %g v %.9g, expected h %.9g s %g v %.9g", tname<T>(), what, t, double(h),
          double(s), double(v), double(h_want[t]), double(s_want[t]), double(v_want[t]));
  }
}

template <typename T>
void test_sequences() {
  {  // tau=2, v_th=1, soft reset: h = v/2 + x
    const auto c = ottt::make_lif_coeffs<T>(2.0, 1.0, false, 0.0, false);
    run_sequence<T>("soft", c, T(0), {T(1.5), T(0.25), T(1.0)}, {T(1.5), T(0.5), T(1.25)}, {T(1), T(0), T(1)},
                    {T(0.5), T(0.5), T(0.25)});
  }
  {  // tau=2, v_th=1, hard reset to 0: h = v/2 + x
    const auto c = ottt::make_lif_coeffs<T>(2.0, 1.0, true, 0.0, false);
    run_sequence<T>("hard", c, T(0), {T(1.5), T(0.25), T(1.0)}, {T(1.5), T(0.25), T(1.125)}, {T(1), T(0), T(1)},
                    {T(0), T(0.25), T(0)});
  }
  {  // tau=2, v_th=1, hard reset to -0.5, decay_input: h = v/2 + x/2 - 0.25; h hits v_th exactly at t=0
    const auto c = ottt::make_lif_coeffs<T>(2.0, 1.0, true, -0.5, true);
    run_sequence<T>("hard decay_input", c, T(-0.5), {T(3), T(0.5), T(2.5)}, {T(1), T(-0.25), T(0.875)},
                    {T(1), T(0), T(0)}, {T(-0.5), T(-0.25), T(0.875)});
  }
}

// ---------------------------------------------------------------------------
// Presynaptic trace a <- decay * a + s, against the unrolled sum
//   a_n = decay^n a_0 + sum_k decay^(n-1-k) s_k.
template <typename T>
void test_trace() {
  using Tl = Tol<T>;
  Lcg rng;
  for (double dec : {0.0, 0.25, 0.5, 0.9, 0.99, 1.0}) {
    const T dT = static_cast<T>(dec);
    for (int trial = 0; trial < 4; ++trial) {
      const T a0 = trial == 0 ? T(0) : static_cast<T>(rng.next(0.0, 3.0));
      std::vector<T> s(60);
      for (auto& e : s) e = trial == 1 ? T(1) : (rng.next(0.0, 1.0) < 0.4 ? T(1) : T(0));
      T a = a0;
      for (std::size_t n = 0; n < s.size(); ++n) {
        a = ottt::trace_step(a, s[n], dT);
        long double want = std::pow(static_cast<long double>(dT), static_cast<long double>(n + 1)) * a0;
        for (std::size_t k = 0; k <= n; ++k)
          want += std::pow(static_cast<long double>(dT), static_cast<long double>(n - k)) * s[k];
        check(near(a, want, 20 * Tl::arith_rtol, Tl::arith_atol), "%s trace decay=%g step %zu: %.12g, expected %.12Lg",
              tname<T>(), dec, n, double(a), want);
      }
      if (trial == 1 && dec < 1.0) {  // constant input: converges to 1 / (1 - decay)
        const long double lim = 1.0L / (1.0L - dec) + std::pow(static_cast<long double>(dec), 60.0L) *
                                                           (a0 - 1.0L / (1.0L - dec));
        check(near(a, lim, 20 * Tl::arith_rtol, Tl::arith_atol), "%s trace decay=%g constant input: %.12g, expected "
              "%.12Lg", tname<T>(), dec, double(a), lim);
      }
    }
  }
  check(ottt::trace_step(T(2), T(1), T(0.5)) == T(2) && ottt::trace_step(T(2), T(0), T(0.5)) == T(1) &&
            ottt::trace_step(T(3), T(1), T(0)) == T(1) && ottt::trace_step(T(3), T(1), T(1)) == T(4),
        "%s trace_step small cases", tname<T>());
}

template <typename T>
void run_all() {
  const int before = g_passed + g_failed;
  const int failed_before = g_failed;
  test_surrogate_pointwise<T>();
  test_surrogate_integrals<T>();
  test_coeffs<T>();
  test_neuron_identities<T>();
  test_sequences<T>();
  test_trace<T>();
  std::printf("  %-6s: %d checks, %d failed\n", tname<T>(), g_passed + g_failed - before, g_failed - failed_before);
}

}  // namespace

int main() {
  run_all<float>();
  run_all<double>();
  if (g_failed > kMaxReports) std::fprintf(stderr, "(%d more failures not shown)\n", g_failed - kMaxReports);
  std::printf("test_math: %d checks passed, %d failed\n", g_passed, g_failed);
  return g_failed == 0 ? 0 : 1;
}
