// Index math of upfirdn2d along one axis, shared by the C++ (CPU) and CUDA kernels.
//
// The op correlates the zero-stuffed, padded signal s with taps w (w = the filter, flipped unless
// flip_filter) and keeps every down-th sample:  out[o] = sum_j w[j] * s[o*down + j],  where
// s[m] = x[(m - p0) / up] when (m - p0) is a multiple of up inside the input, and 0 otherwise.
// Input sample i therefore meets tap j = i*up + p0 - o*down. Iterating over i instead of j visits only the
// non-zero taps (about k/up of them) and computes only the kept outputs.
#pragma once

#include <stdint.h>

#ifndef SG2_HD
#ifdef __CUDACC__
#define SG2_HD __host__ __device__ __forceinline__
#else
#define SG2_HD inline
#endif
#endif

namespace sg2 {

// Index arithmetic is templated on the integer type I: the CPU uses int64_t, the CUDA kernels int32_t whenever
// every index fits (64-bit division is emulated on GPUs and would dominate the kernels' time).

// Floor and ceiling of a / b for b > 0 and any sign of a.
template <typename I>
SG2_HD I floor_div(I a, I b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }
template <typename I>
SG2_HD I ceil_div(I a, I b) { return -floor_div(-a, b); }

// The input samples reaching output o: i = i0 + t meets tap j = j0 + t*up, for t in [0, count).
template <typename I>
struct AxisTaps {
  I i0;
  I j0;
  I count;
};

template <typename I>
SG2_HD AxisTaps<I> axis_taps(I o, I up, I down, I p0, I k, I in) {
  const I base = o * down - p0;         // j = i*up - base
  I i0 = ceil_div(base, up);            // first i with j >= 0
  I i1 = floor_div(base + k - 1, up);   // last i with j <= k - 1
  if (i0 < 0) i0 = 0;
  if (i1 > in - 1) i1 = in - 1;
  AxisTaps<I> r;
  r.i0 = i0;
  r.j0 = i0 * up - base;
  r.count = i1 >= i0 ? i1 - i0 + 1 : 0;
  return r;
}

// Output length along one axis: (in*up + p0 + p1 - k + down) // down.
SG2_HD int64_t out_size(int64_t in, int64_t up, int64_t down, int64_t p0, int64_t p1, int64_t k) {
  return floor_div<int64_t>(in * up + p0 + p1 - k + down, down);
}

}  // namespace sg2
