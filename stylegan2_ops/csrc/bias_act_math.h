// Per-element math of bias_act, shared by the C++ (CPU) and CUDA kernels.
// Branches are written as selects between values that are cheap to compute on both sides, so that the CPU
// loops vectorize (a conditional multiply would be a trap-preserving branch to the compiler).
//
// y = clamp(gain * act(z), -c, c) with z = x + b. The backward needs act'(z) (and act''(z) for double
// backward). For linear, relu and lrelu (alpha > 0) act' is a function of the sign of y alone, so only y
// is saved; the others recompute z from the saved x and b.
#pragma once

#include <math.h>

#ifdef __CUDACC__
#define SG2_HD __host__ __device__ __forceinline__
#else
#define SG2_HD inline
#endif

namespace sg2 {

// Must match ACTIVATIONS in stylegan2_ops/bias_act.py.
enum Act : int { kLinear = 0, kRelu, kLrelu, kTanh, kSigmoid, kElu, kSelu, kSoftplus, kSwish };

// Constants of SELU (Klambauer et al. 2017), as in torch.nn.functional.selu.
constexpr double kSeluAlpha = 1.6732632423543772848170429916717;
constexpr double kSeluScale = 1.0507009873554804934193349852946;
// softplus(z) = z above this threshold, as in torch.nn.functional.softplus (beta 1).
constexpr double kSoftplusThreshold = 20.0;

SG2_HD float exp_(float v) { return expf(v); }
SG2_HD double exp_(double v) { return exp(v); }
SG2_HD float expm1_(float v) { return expm1f(v); }
SG2_HD double expm1_(double v) { return expm1(v); }
SG2_HD float log1p_(float v) { return log1pf(v); }
SG2_HD double log1p_(double v) { return log1p(v); }
SG2_HD float tanh_(float v) { return tanhf(v); }
SG2_HD double tanh_(double v) { return tanh(v); }

template <typename T>
SG2_HD T sigmoid_(T z) {
  return T(1) / (T(1) + exp_(-z));
}

// act(z)
template <int A, typename T>
SG2_HD T act(T z, T alpha) {
  if constexpr (A == kLinear) return z;
  if constexpr (A == kRelu) return z > T(0) ? z : T(0);
  if constexpr (A == kLrelu) return z * (z > T(0) ? T(1) : alpha);  // select, then multiply: vectorizes
  if constexpr (A == kTanh) return tanh_(z);
  if constexpr (A == kSigmoid) return sigmoid_(z);
  if constexpr (A == kElu) return z > T(0) ? z : alpha * expm1_(z);
  if constexpr (A == kSelu) return T(kSeluScale) * (z > T(0) ? z : T(kSeluAlpha) * expm1_(z));
  if constexpr (A == kSoftplus) return z > T(kSoftplusThreshold) ? z : log1p_(exp_(z));
  if constexpr (A == kSwish) return z * sigmoid_(z);
  return z;
}

// act'(z)
template <int A, typename T>
SG2_HD T act_d1(T z, T alpha) {
  if constexpr (A == kLinear) return T(1);
  if constexpr (A == kRelu) return z > T(0) ? T(1) : T(0);
  if constexpr (A == kLrelu) return z > T(0) ? T(1) : alpha;
  if constexpr (A == kTanh) {
    T t = tanh_(z);
    return T(1) - t * t;
  }
  if constexpr (A == kSigmoid) {
    T s = sigmoid_(z);
    return s * (T(1) - s);
  }
  if constexpr (A == kElu) return z > T(0) ? T(1) : alpha * exp_(z);
  if constexpr (A == kSelu) return T(kSeluScale) * (z > T(0) ? T(1) : T(kSeluAlpha) * exp_(z));
  if constexpr (A == kSoftplus) return z > T(kSoftplusThreshold) ? T(1) : sigmoid_(z);
  if constexpr (A == kSwish) {
    T s = sigmoid_(z);
    return s * (T(1) + z * (T(1) - s));
  }
  return T(1);
}

// act''(z) (zero almost everywhere for the piecewise-linear activations).
template <int A, typename T>
SG2_HD T act_d2(T z, T alpha) {
  if constexpr (A == kTanh) {
    T t = tanh_(z);
    return T(-2) * t * (T(1) - t * t);
  }
  if constexpr (A == kSigmoid) {
    T s = sigmoid_(z);
    return s * (T(1) - s) * (T(1) - T(2) * s);
  }
  if constexpr (A == kElu) return z > T(0) ? T(0) : alpha * exp_(z);
  if constexpr (A == kSelu) return z > T(0) ? T(0) : T(kSeluScale * kSeluAlpha) * exp_(z);
  if constexpr (A == kSoftplus) {
    if (z > T(kSoftplusThreshold)) return T(0);
    T s = sigmoid_(z);
    return s * (T(1) - s);
  }
  if constexpr (A == kSwish) {
    T s = sigmoid_(z);
    return s * (T(1) - s) * (T(2) + z * (T(1) - T(2) * s));
  }
  return T(0);
}

// act'(z) recovered from the saved output y (linear, relu, lrelu with alpha > 0): z > 0 exactly when
// gain * y > 0, because act keeps the sign of z and the clamp keeps the sign of gain * act(z).
template <int A, typename T>
SG2_HD T act_d1_from_y(T y, T alpha, T gain) {
  if constexpr (A == kRelu) return y * gain > T(0) ? T(1) : T(0);
  if constexpr (A == kLrelu) return y * gain > T(0) ? T(1) : alpha;
  return T(1);
}

// Forward: clamp(gain * act(x + b)); clamp < 0 disables the clamp.
template <int A, typename T>
SG2_HD T forward(T x, T b, T alpha, T gain, T clamp) {
  T v = gain * act<A, T>(x + b, alpha);
  if (clamp >= T(0)) v = v < -clamp ? -clamp : (v > clamp ? clamp : v);
  return v;
}

// d/dz of the forward times g, from the saved output y: zero where the clamp was active (|y| reached c).
template <int A, typename T>
SG2_HD T grad_from_y(T g, T y, T alpha, T gain, T clamp) {
  T d = g * gain * act_d1_from_y<A, T>(y, alpha, gain);
  if (clamp >= T(0) && !(y > -clamp && y < clamp)) d = T(0);
  return d;
}

// d/dz (order 1) or d^2/dz^2 (order 2) of the forward times g, from the saved input x and bias b: zero where
// the clamp was active (|gain * act(z)| > c; at equality the gradient passes, as in torch.clamp).
template <int A, typename T>
SG2_HD T grad_from_x(T g, T x, T b, T alpha, T gain, T clamp, int order) {
  T z = x + b;
  T d = g * gain * (order == 1 ? act_d1<A, T>(z, alpha) : act_d2<A, T>(z, alpha));
  if (clamp >= T(0)) {
    T v = gain * act<A, T>(z, alpha);
    if (v < -clamp || v > clamp) d = T(0);
  }
  return d;
}

}  // namespace sg2
