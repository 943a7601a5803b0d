// Launchers of the CUDA kernels (ops_cuda_kernels.cu), called by the PyTorch bindings (ops_cuda.cpp).
// Plain pointers and sizes only: the .cu file includes no PyTorch header, so nvcc compiles it in seconds.
#pragma once

#include <cuda_runtime_api.h>
#include <stdint.h>

namespace sg2 {

// Element types of the tensors; computation is float32 for the 16-bit types.
enum DType : int { kHalf = 0, kBFloat16 = 1, kFloat = 2, kDouble = 3 };

// y = clamp(gain * act(x + b)) over n elements laid out as (outer, channels, inner); b may be null.
cudaError_t launch_bias_act_forward(int dtype, const void* x, const void* b, void* y, int64_t n, int64_t channels,
                                    int64_t inner, int act, double alpha, double gain, double clamp,
                                    cudaStream_t stream);

// dx = g * gain * act'(z) (order 1) or act''(z) (order 2), zero where the clamp was active; `ref` is y when
// from_y (order 1 only), else x, with z = x + b.
cudaError_t launch_bias_act_grad(int dtype, const void* g, const void* ref, const void* b, void* dx, int64_t n,
                                 int64_t channels, int64_t inner, int act, int order, bool from_y, double alpha,
                                 double gain, double clamp, cudaStream_t stream);

// out = upfirdn2d(x) as a correlation with 2-D taps w (float64 for double tensors, else float32; already
// flipped and scaled). x: (planes, in_h, in_w), out: (planes, out_h, out_w), both contiguous.
cudaError_t launch_upfirdn2d(int dtype, const void* x, const void* w, void* out, int64_t planes, int64_t in_h,
                             int64_t in_w, int64_t out_h, int64_t out_w, int64_t kh, int64_t kw, int64_t upx,
                             int64_t upy, int64_t downx, int64_t downy, int64_t px0, int64_t py0,
                             cudaStream_t stream);

}  // namespace sg2
