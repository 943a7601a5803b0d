// PyTorch bindings of the CUDA kernels: argument checks, device guard, stream, output allocation.
#include <torch/extension.h>

// c10-level CUDA headers only: ATen/cuda/CUDAContext.h would also need the cuBLAS/cuSPARSE headers, which minimal
// toolkits lack.
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <tuple>
#include <vector>

#include "ops_cuda.h"

namespace {

int dtype_code(const at::Tensor& t, const char* op) {
  switch (t.scalar_type()) {
    case at::kHalf: return sg2::kHalf;
    case at::kBFloat16: return sg2::kBFloat16;
    case at::kFloat: return sg2::kFloat;
    case at::kDouble: return sg2::kDouble;
    default: TORCH_CHECK(false, op, " (cuda): unsupported dtype ", t.scalar_type());
  }
  return -1;
}

void check_cuda(const at::Tensor& t, const char* name, const at::Tensor& like) {
  TORCH_CHECK(t.is_cuda() && t.device() == like.device(), name, " must be on ", like.device());
  TORCH_CHECK(t.scalar_type() == like.scalar_type(), name, " must have dtype ", like.scalar_type());
  TORCH_CHECK(t.is_contiguous(), name, " must be contiguous");
}

void channels_inner(const at::Tensor& x, int64_t dim, int64_t* channels, int64_t* inner) {
  TORCH_CHECK(dim >= 0 && dim < x.dim(), "bias_act: dim out of range");
  *channels = x.size(dim);
  *inner = 1;
  for (int64_t d = dim + 1; d < x.dim(); ++d) *inner *= x.size(d);
}

at::Tensor bias_act_forward(const at::Tensor& x, const at::Tensor& b, int64_t dim, int64_t act, double alpha,
                            double gain, double clamp) {
  check_cuda(x, "x", x);
  const bool has_b = b.numel() > 0;
  if (has_b) check_cuda(b, "b", x);
  int64_t channels, inner;
  channels_inner(x, dim, &channels, &inner);
  TORCH_CHECK(!has_b || b.numel() == channels, "bias_act: b must have x.shape[dim] elements");
  const c10::cuda::CUDAGuard guard(x.device());
  auto y = at::empty_like(x);
  C10_CUDA_CHECK(sg2::launch_bias_act_forward(dtype_code(x, "bias_act"), x.data_ptr(),
                                              has_b ? b.data_ptr() : nullptr, y.data_ptr(), x.numel(), channels,
                                              inner, int(act), alpha, gain, clamp,
                                              c10::cuda::getCurrentCUDAStream()));
  return y;
}

std::tuple<at::Tensor, at::Tensor> bias_act_grad(const at::Tensor& g, const at::Tensor& x, const at::Tensor& b,
                                                 const at::Tensor& y, int64_t dim, int64_t act, int64_t order,
                                                 double alpha, double gain, double clamp, bool want_db) {
  check_cuda(g, "grad", g);
  TORCH_CHECK(order == 1 || order == 2, "bias_act: order must be 1 or 2");
  const bool from_y = y.numel() > 0;
  TORCH_CHECK(!(from_y && order == 2), "bias_act: the second derivative needs x, not y");
  const at::Tensor& ref = from_y ? y : x;
  check_cuda(ref, from_y ? "y" : "x", g);
  TORCH_CHECK(ref.sizes() == g.sizes(), "bias_act: saved tensor and grad must have the same shape");
  const bool has_b = b.numel() > 0;
  if (has_b) check_cuda(b, "b", g);
  int64_t channels, inner;
  channels_inner(g, dim, &channels, &inner);
  TORCH_CHECK(!has_b || b.numel() == channels, "bias_act: b must have x.shape[dim] elements");
  const c10::cuda::CUDAGuard guard(g.device());
  auto dx = at::empty_like(g);
  C10_CUDA_CHECK(sg2::launch_bias_act_grad(dtype_code(g, "bias_act"), g.data_ptr(), ref.data_ptr(),
                                           has_b && !from_y ? b.data_ptr() : nullptr, dx.data_ptr(), g.numel(),
                                           channels, inner, int(act), int(order), from_y, alpha, gain, clamp,
                                           c10::cuda::getCurrentCUDAStream()));
  at::Tensor db;
  if (want_db) {
    std::vector<int64_t> dims;
    for (int64_t d = 0; d < g.dim(); ++d)
      if (d != dim) dims.push_back(d);
    db = dims.empty() ? dx.clone() : dx.sum(dims);
  }
  return {dx, db};
}

at::Tensor upfirdn2d_forward(const at::Tensor& x, const at::Tensor& w, int64_t upx, int64_t upy, int64_t downx,
                             int64_t downy, int64_t px0, int64_t px1, int64_t py0, int64_t py1) {
  check_cuda(x, "x", x);
  TORCH_CHECK(x.dim() == 4 && w.dim() == 2, "upfirdn2d: x must be 4-D and f 2-D");
  TORCH_CHECK(w.is_cuda() && w.device() == x.device() && w.is_contiguous(), "upfirdn2d: f must be contiguous on ",
              x.device());
  const auto acc_type = x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  TORCH_CHECK(w.scalar_type() == acc_type, "upfirdn2d (cuda): f must be ", acc_type);
  TORCH_CHECK(upx >= 1 && upy >= 1 && downx >= 1 && downy >= 1, "upfirdn2d: up and down must be >= 1");
  const int64_t in_h = x.size(2), in_w = x.size(3), kh = w.size(0), kw = w.size(1);
  const int64_t out_h = (in_h * upy + py0 + py1 - kh + downy) / downy;
  const int64_t out_w = (in_w * upx + px0 + px1 - kw + downx) / downx;
  TORCH_CHECK(out_h >= 1 && out_w >= 1 && in_h * upy + py0 + py1 - kh + downy > 0 &&
                  in_w * upx + px0 + px1 - kw + downx > 0,
              "upfirdn2d: empty output");
  const c10::cuda::CUDAGuard guard(x.device());
  auto out = at::empty({x.size(0), x.size(1), out_h, out_w}, x.options());
  C10_CUDA_CHECK(sg2::launch_upfirdn2d(dtype_code(x, "upfirdn2d"), x.data_ptr(), w.data_ptr(), out.data_ptr(),
                                       x.size(0) * x.size(1), in_h, in_w, out_h, out_w, kh, kw, upx, upy, downx,
                                       downy, px0, py0, c10::cuda::getCurrentCUDAStream()));
  return out;
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "stylegan2_ops CUDA kernels";
  m.def("bias_act_forward", &bias_act_forward, "y = clamp(gain * act(x + b))");
  m.def("bias_act_grad", &bias_act_grad, "(dx, db) of bias_act, first or second order");
  m.def("upfirdn2d_forward", &upfirdn2d_forward, "upfirdn2d as a correlation with 2-D taps");
}
