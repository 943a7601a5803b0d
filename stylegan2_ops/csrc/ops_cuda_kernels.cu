// CUDA kernels of bias_act and upfirdn2d: float16, bfloat16, float32, float64 (16-bit types computed in float32).
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <cstdlib>
#include <type_traits>

#include "bias_act_math.h"
#include "ops_cuda.h"
#include "upfirdn2d_math.h"

namespace sg2 {
namespace {

template <typename T>
struct AccType {
  using type = float;
};
template <>
struct AccType<double> {
  using type = double;
};

__device__ __forceinline__ float to_acc(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_acc(__nv_bfloat16 v) { return __bfloat162float(v); }
__device__ __forceinline__ float to_acc(float v) { return v; }
__device__ __forceinline__ double to_acc(double v) { return v; }

template <typename T>
__device__ __forceinline__ T from_acc(typename AccType<T>::type v);
template <>
__device__ __forceinline__ __half from_acc<__half>(float v) { return __float2half_rn(v); }
template <>
__device__ __forceinline__ __nv_bfloat16 from_acc<__nv_bfloat16>(float v) { return __float2bfloat16_rn(v); }
template <>
__device__ __forceinline__ float from_acc<float>(float v) { return v; }
template <>
__device__ __forceinline__ double from_acc<double>(double v) { return v; }

constexpr int kThreads = 256;

inline unsigned blocks_for(int64_t n) { return unsigned(std::min<int64_t>((n + kThreads - 1) / kThreads, 65535)); }

// Kernels index with I = int32_t when every index they form fits (the usual case), else int64_t: GPUs emulate
// 64-bit division, and the per-element channel and row/column divisions would otherwise dominate.
constexpr int64_t kMax32 = (int64_t(1) << 31) - 1;

template <typename Body>
cudaError_t dispatch_index(bool fits_32, Body&& body) {
  return fits_32 ? body(int32_t{}) : body(int64_t{});
}

// n / d for 0 <= n and a divisor d >= 1 fixed at launch. For 32-bit indices (n < 2^31) the division is a
// multiply-high, an add and a shift (Granlund & Montgomery 1994): with s = ceil(log2 d) and
// m = floor(2^32 (2^s - d) / d) + 1, n / d = (umulhi(n, m) + n) >> s; the add cannot overflow since umulhi(n, m) < n.
template <typename I>
struct Divider {
  I d;
  explicit Divider(int64_t d_) : d(I(d_)) {}
  __device__ __forceinline__ I div(I n) const { return n / d; }
};

template <>
struct Divider<int32_t> {
  uint32_t m, s;
  explicit Divider(int64_t d) : s(0) {
    while ((int64_t(1) << s) < d) ++s;
    m = uint32_t(((uint64_t(1) << 32) * ((uint64_t(1) << s) - uint64_t(d))) / uint64_t(d) + 1);
  }
  __device__ __forceinline__ int32_t div(int32_t n) const {
    return int32_t((__umulhi(uint32_t(n), m) + uint32_t(n)) >> s);
  }
};

// The channel of flat element i of an (outer, channels, inner) tensor: (i / inner) % channels.
template <typename I>
__device__ __forceinline__ I channel_of(I i, const Divider<I>& by_inner, const Divider<I>& by_channels,
                                        I channels) {
  const I row = by_inner.div(i);
  return row - by_channels.div(row) * channels;
}

template <typename T, int A, typename I>
__global__ void bias_act_forward_kernel(const T* __restrict__ x, const T* __restrict__ b, T* __restrict__ y, I n,
                                        I channels, Divider<I> by_inner, Divider<I> by_channels,
                                        typename AccType<T>::type alpha, typename AccType<T>::type gain,
                                        typename AccType<T>::type clamp) {
  using acc_t = typename AccType<T>::type;
  for (I i = blockIdx.x * I(blockDim.x) + threadIdx.x; i < n; i += I(blockDim.x) * gridDim.x) {
    const acc_t bv = b ? to_acc(b[channel_of(i, by_inner, by_channels, channels)]) : acc_t(0);
    y[i] = from_acc<T>(forward<A, acc_t>(to_acc(x[i]), bv, alpha, gain, clamp));
  }
}

template <typename T, int A, typename I>
__global__ void bias_act_grad_kernel(const T* __restrict__ g, const T* __restrict__ ref, const T* __restrict__ b,
                                     T* __restrict__ dx, I n, I channels, Divider<I> by_inner,
                                     Divider<I> by_channels, int order, bool from_y,
                                     typename AccType<T>::type alpha, typename AccType<T>::type gain,
                                     typename AccType<T>::type clamp) {
  using acc_t = typename AccType<T>::type;
  for (I i = blockIdx.x * I(blockDim.x) + threadIdx.x; i < n; i += I(blockDim.x) * gridDim.x) {
    const acc_t gv = to_acc(g[i]), rv = to_acc(ref[i]);
    acc_t d;
    if (from_y) {
      d = grad_from_y<A, acc_t>(gv, rv, alpha, gain, clamp);
    } else {
      const acc_t bv = b ? to_acc(b[channel_of(i, by_inner, by_channels, channels)]) : acc_t(0);
      d = grad_from_x<A, acc_t>(gv, rv, bv, alpha, gain, clamp, order);
    }
    dx[i] = from_acc<T>(d);
  }
}

// One thread per output sample; only the taps that meet input samples are visited. UP and DOWN > 0 fix both
// axes' factors at compile time (the common 1 and 2), so that axis_taps' divisions become shifts; 0 = runtime.
template <typename T, typename I, int UP, int DOWN>
__global__ void upfirdn2d_kernel(const T* __restrict__ x, const typename AccType<T>::type* __restrict__ w,
                                 T* __restrict__ out, I planes, I in_h, I in_w, I out_h, I out_w, I kh, I kw,
                                 I upx_arg, I upy_arg, I downx_arg, I downy_arg, I px0, I py0, Divider<I> by_out_w,
                                 Divider<I> by_out_h) {
  using acc_t = typename AccType<T>::type;
  const I upx = UP > 0 ? I(UP) : upx_arg, upy = UP > 0 ? I(UP) : upy_arg;
  const I downx = DOWN > 0 ? I(DOWN) : downx_arg, downy = DOWN > 0 ? I(DOWN) : downy_arg;
  const I n = planes * out_h * out_w;
  for (I idx = blockIdx.x * I(blockDim.x) + threadIdx.x; idx < n; idx += I(blockDim.x) * gridDim.x) {
    const I row = by_out_w.div(idx), ox = idx - row * out_w;
    const I plane = by_out_h.div(row), oy = row - plane * out_h;
    const AxisTaps<I> tx = axis_taps<I>(ox, upx, downx, px0, kw, in_w);
    const AxisTaps<I> ty = axis_taps<I>(oy, upy, downy, py0, kh, in_h);
    const T* xp = x + (int64_t(plane) * in_h + ty.i0) * in_w + tx.i0;
    const acc_t* wp = w + ty.j0 * kw + tx.j0;
    acc_t s = 0;
    for (I t = 0; t < ty.count; ++t) {
      const T* xr = xp + int64_t(t) * in_w;
      const acc_t* wr = wp + t * upy * kw;
      for (I u = 0; u < tx.count; ++u) s += to_acc(xr[u]) * wr[u * upx];
    }
    out[idx] = from_acc<T>(s);
  }
}

// Calls body(T{}, integral_constant<A>) for the element type and activation.
template <typename T, typename Body>
cudaError_t dispatch_act(int act, Body&& body) {
  switch (act) {
    case kLinear: return body(T{}, std::integral_constant<int, kLinear>{});
    case kRelu: return body(T{}, std::integral_constant<int, kRelu>{});
    case kLrelu: return body(T{}, std::integral_constant<int, kLrelu>{});
    case kTanh: return body(T{}, std::integral_constant<int, kTanh>{});
    case kSigmoid: return body(T{}, std::integral_constant<int, kSigmoid>{});
    case kElu: return body(T{}, std::integral_constant<int, kElu>{});
    case kSelu: return body(T{}, std::integral_constant<int, kSelu>{});
    case kSoftplus: return body(T{}, std::integral_constant<int, kSoftplus>{});
    case kSwish: return body(T{}, std::integral_constant<int, kSwish>{});
    default: return cudaErrorInvalidValue;
  }
}

template <typename Body>
cudaError_t dispatch_type_act(int dtype, int act, Body&& body) {
  switch (dtype) {
    case kHalf: return dispatch_act<__half>(act, body);
    case kBFloat16: return dispatch_act<__nv_bfloat16>(act, body);
    case kFloat: return dispatch_act<float>(act, body);
    case kDouble: return dispatch_act<double>(act, body);
    default: return cudaErrorInvalidValue;
  }
}

// Calls body(T{}) for the element type.
template <typename Body>
cudaError_t dispatch_type(int dtype, Body&& body) {
  switch (dtype) {
    case kHalf: return body(__half{});
    case kBFloat16: return body(__nv_bfloat16{});
    case kFloat: return body(float{});
    case kDouble: return body(double{});
    default: return cudaErrorInvalidValue;
  }
}

// The clamp as the element type rounds it: y was stored as T, so "|y| reached c" compares against T(c).
template <typename T>
typename AccType<T>::type clamp_as_stored(double clamp);
template <>
float clamp_as_stored<__half>(double clamp) { return __half2float(__float2half_rn(float(clamp))); }
template <>
float clamp_as_stored<__nv_bfloat16>(double clamp) { return __bfloat162float(__float2bfloat16_rn(float(clamp))); }
template <>
float clamp_as_stored<float>(double clamp) { return float(clamp); }
template <>
double clamp_as_stored<double>(double clamp) { return clamp; }

}  // namespace

cudaError_t launch_bias_act_forward(int dtype, const void* x, const void* b, void* y, int64_t n, int64_t channels,
                                    int64_t inner, int act, double alpha, double gain, double clamp,
                                    cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  // i + stride must not overflow I either: n + 65535 * kThreads < 2^31.
  const bool fits_32 = n <= kMax32 - 65535 * int64_t(kThreads);
  return dispatch_type_act(dtype, act, [&](auto t, auto a) {
    using T = decltype(t);
    using acc_t = typename AccType<T>::type;
    return dispatch_index(fits_32, [&](auto i) {
      using I = decltype(i);
      bias_act_forward_kernel<T, decltype(a)::value, I><<<blocks_for(n), kThreads, 0, stream>>>(
          static_cast<const T*>(x), static_cast<const T*>(b), static_cast<T*>(y), I(n), I(channels),
          Divider<I>(inner), Divider<I>(channels), acc_t(alpha), acc_t(gain), acc_t(clamp));
      return cudaGetLastError();
    });
  });
}

cudaError_t launch_bias_act_grad(int dtype, const void* g, const void* ref, const void* b, void* dx, int64_t n,
                                 int64_t channels, int64_t inner, int act, int order, bool from_y, double alpha,
                                 double gain, double clamp, cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  const bool fits_32 = n <= kMax32 - 65535 * int64_t(kThreads);
  return dispatch_type_act(dtype, act, [&](auto t, auto a) {
    using T = decltype(t);
    using acc_t = typename AccType<T>::type;
    const acc_t c = clamp >= 0 && from_y ? clamp_as_stored<T>(clamp) : acc_t(clamp);
    return dispatch_index(fits_32, [&](auto i) {
      using I = decltype(i);
      bias_act_grad_kernel<T, decltype(a)::value, I><<<blocks_for(n), kThreads, 0, stream>>>(
          static_cast<const T*>(g), static_cast<const T*>(ref), static_cast<const T*>(b), static_cast<T*>(dx), I(n),
          I(channels), Divider<I>(inner), Divider<I>(channels), order, from_y, acc_t(alpha), acc_t(gain), c);
      return cudaGetLastError();
    });
  });
}

cudaError_t launch_upfirdn2d(int dtype, const void* x, const void* w, void* out, int64_t planes, int64_t in_h,
                             int64_t in_w, int64_t out_h, int64_t out_w, int64_t kh, int64_t kw, int64_t upx,
                             int64_t upy, int64_t downx, int64_t downy, int64_t px0, int64_t py0,
                             cudaStream_t stream) {
  const int64_t n = planes * out_h * out_w;
  if (n == 0) return cudaSuccess;
  // 32-bit indices need the flat output index (plus the grid stride), the input plane offsets, and the axis
  // positions o*down - p0 + k and i*up (both at most about in*up + |p0| + k + down) to fit.
  const int64_t span = std::max(in_h * upy + std::abs(py0) + kh + downy * out_h, in_w * upx + std::abs(px0) + kw +
                                                                                   downx * out_w);
  const bool fits_32 = n <= kMax32 - 65535 * int64_t(kThreads) && planes * in_h * in_w <= kMax32 && span <= kMax32;
  return dispatch_type(dtype, [&](auto t) {
    using T = decltype(t);
    using acc_t = typename AccType<T>::type;
    return dispatch_index(fits_32, [&](auto i) {
      using I = decltype(i);
      auto launch = [&](auto up, auto down) {
        upfirdn2d_kernel<T, I, decltype(up)::value, decltype(down)::value><<<blocks_for(n), kThreads, 0, stream>>>(
            static_cast<const T*>(x), static_cast<const acc_t*>(w), static_cast<T*>(out), I(planes), I(in_h),
            I(in_w), I(out_h), I(out_w), I(kh), I(kw), I(upx), I(upy), I(downx), I(downy), I(px0), I(py0),
            Divider<I>(out_w), Divider<I>(out_h));
        return cudaGetLastError();
      };
      using C0 = std::integral_constant<int, 0>;
      using C1 = std::integral_constant<int, 1>;
      using C2 = std::integral_constant<int, 2>;
      if (upx == upy && downx == downy) {  // the generator's cases: filter, up by 2, down by 2
        if (upx == 1 && downx == 1) return launch(C1{}, C1{});
        if (upx == 2 && downx == 1) return launch(C2{}, C1{});
        if (upx == 1 && downx == 2) return launch(C1{}, C2{});
      }
      return launch(C0{}, C0{});
    });
  });
}

}  // namespace sg2
