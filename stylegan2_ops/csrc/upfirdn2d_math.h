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

// Floor and ceiling of a / b for b > 0 and any sign of a.
SG2_HD int64_t floor_div(int64_t a, int64_t b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }
SG2_HD int64_t ceil_div(int64_t a, int64_t b) { return -floor_div(-a, b); }

// The input samples reaching output o: i = i0 + t meets tap j = j0 + t*up, for t in [0, count).
struct AxisTaps {
  int64_t i0;
  int64_t j0;
  int64_t count;
};

SG2_HD AxisTaps axis_taps(int64_t o, int64_t up, int64_t down, int64_t p0, int64_t k, int64_t in) {
  const int64_t base = o * down - p0;  // j = i*up - base
  int64_t i0 = ceil_div(base, up);     // first i with j >= 0
  int64_t i1 = floor_div(base + k - 1, up);  // last i with j <= k - 1
  if (i0 < 0) i0 = 0;
  if (i1 > in - 1) i1 = in - 1;
  AxisTaps r;
  r.i0 = i0;
  r.j0 = i0 * up - base;
  r.count = i1 >= i0 ? i1 - i0 + 1 : 0;
  return r;
}

// Output length along one axis: (in*up + p0 + p1 - k + down) // down.
SG2_HD int64_t out_size(int64_t in, int64_t up, int64_t down, int64_t p0, int64_t p1, int64_t k) {
  return floor_div(in * up + p0 + p1 - k + down, down);
}

}  // namespace sg2
