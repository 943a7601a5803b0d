// C++ (CPU) kernels of bias_act and upfirdn2d, float32 and float64, parallel over rows with at::parallel_for.
#include <torch/extension.h>

#include <ATen/Parallel.h>

#include <algorithm>
#include <numeric>
#include <tuple>
#include <type_traits>
#include <vector>

#include "bias_act_math.h"
#include "upfirdn2d_math.h"

namespace {

template <int A>
using ActConst = std::integral_constant<int, A>;

// Calls body(std::integral_constant<int, A>{}) so that the activation is a compile-time constant inside.
template <typename Body>
void dispatch_act(int64_t act, Body&& body) {
  switch (act) {
    case sg2::kLinear: return body(ActConst<sg2::kLinear>{});
    case sg2::kRelu: return body(ActConst<sg2::kRelu>{});
    case sg2::kLrelu: return body(ActConst<sg2::kLrelu>{});
    case sg2::kTanh: return body(ActConst<sg2::kTanh>{});
    case sg2::kSigmoid: return body(ActConst<sg2::kSigmoid>{});
    case sg2::kElu: return body(ActConst<sg2::kElu>{});
    case sg2::kSelu: return body(ActConst<sg2::kSelu>{});
    case sg2::kSoftplus: return body(ActConst<sg2::kSoftplus>{});
    case sg2::kSwish: return body(ActConst<sg2::kSwish>{});
    default: TORCH_CHECK(false, "bias_act: unknown activation code ", act);
  }
}

// x viewed as (outer, C, inner) with C = x.size(dim): row r = (o, c) holds `inner` contiguous elements.
struct RowLayout {
  int64_t channels, inner, rows;
};

RowLayout row_layout(const at::Tensor& x, int64_t dim) {
  RowLayout l;
  l.channels = x.size(dim);
  l.inner = 1;
  for (int64_t d = dim + 1; d < x.dim(); ++d) l.inner *= x.size(d);
  l.rows = l.inner > 0 && l.channels > 0 ? x.numel() / l.inner : 0;
  return l;
}

int64_t row_grain(int64_t inner) { return std::max<int64_t>(1, 32768 / std::max<int64_t>(inner, 1)); }

void check_cpu(const at::Tensor& t, const char* name, const at::Tensor& like) {
  TORCH_CHECK(t.device().is_cpu(), name, " must be a CPU tensor");
  TORCH_CHECK(t.scalar_type() == like.scalar_type(), name, " must have dtype ", like.scalar_type(), ", got ",
              t.scalar_type());
  TORCH_CHECK(t.is_contiguous(), name, " must be contiguous");
}

// dr[i] = f(i) for i < n, returning the sum of dr when `want_sum`: fused into the same pass, summed in
// vectorized float blocks of 1024 (omp simd) that are added up in double, so db keeps the reference's precision.
// Callers pass f capturing by value ([=]): scalars read through references might alias dr as far as GCC can tell,
// and it then leaves the clamp's selects unvectorized (4x slower).
template <typename T, typename F>
double map_row(T* __restrict dr, int64_t n, bool want_sum, const F& f) {
  if (!want_sum) {
    for (int64_t i = 0; i < n; ++i) dr[i] = f(i);
    return 0;
  }
  double total = 0;
  for (int64_t i0 = 0; i0 < n; i0 += 1024) {
    const int64_t i1 = std::min(n, i0 + 1024);
    T s = 0;
#pragma omp simd reduction(+ : s)
    for (int64_t i = i0; i < i1; ++i) {
      const T d = f(i);
      dr[i] = d;
      s += d;
    }
    total += double(s);
  }
  return total;
}

at::Tensor bias_act_forward(const at::Tensor& x, const at::Tensor& b, int64_t dim, int64_t act, double alpha,
                            double gain, double clamp) {
  check_cpu(x, "x", x);
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble,
              "bias_act (cpp): x must be float32 or float64, got ", x.scalar_type());
  TORCH_CHECK(dim >= 0 && dim < x.dim(), "bias_act: dim out of range");
  const bool has_b = b.numel() > 0;
  if (has_b) check_cpu(b, "b", x);
  TORCH_CHECK(!has_b || b.numel() == x.size(dim), "bias_act: b must have x.shape[dim] elements");
  auto y = at::empty_like(x);
  const RowLayout l = row_layout(x, dim);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "bias_act_forward_cpu", [&] {
    const scalar_t* xp = x.data_ptr<scalar_t>();
    const scalar_t* bp = has_b ? b.data_ptr<scalar_t>() : nullptr;
    scalar_t* yp = y.data_ptr<scalar_t>();
    const scalar_t a = alpha, g = gain, c = clamp;
    dispatch_act(act, [&](auto act_const) {
      constexpr int A = decltype(act_const)::value;
      at::parallel_for(0, l.rows, row_grain(l.inner), [&](int64_t r0, int64_t r1) {
        for (int64_t r = r0; r < r1; ++r) {
          const scalar_t bv = has_b ? bp[r % l.channels] : scalar_t(0);
          const scalar_t* xr = xp + r * l.inner;
          if (c >= scalar_t(0)) {
            map_row(yp + r * l.inner, l.inner, false,
                    [=](int64_t i) { return sg2::forward<A, scalar_t>(xr[i], bv, a, g, c); });
          } else {  // the same without the clamp, so that the loop vectorizes cleanly
            map_row(yp + r * l.inner, l.inner, false,
                    [=](int64_t i) { return g * sg2::act<A, scalar_t>(xr[i] + bv, a); });
          }
        }
      });
    });
  });
  return y;
}

// The gradient of bias_act w.r.t. its pre-activation z = x + b, times g:
//   order 1: g * gain * act'(z), computed from y when `y` is given (linear, relu, lrelu), else from x and b;
//   order 2: g * gain * act''(z) from x and b (for double backward).
// Zero where the clamp was active. Returns (dx, db) with db = sum of dx over every axis but dim (if want_db).
std::tuple<at::Tensor, at::Tensor> bias_act_grad(const at::Tensor& g, const at::Tensor& x, const at::Tensor& b,
                                                 const at::Tensor& y, int64_t dim, int64_t act, int64_t order,
                                                 double alpha, double gain, double clamp, bool want_db) {
  check_cpu(g, "grad", g);
  TORCH_CHECK(g.scalar_type() == at::kFloat || g.scalar_type() == at::kDouble,
              "bias_act (cpp): grad must be float32 or float64, got ", g.scalar_type());
  TORCH_CHECK(order == 1 || order == 2, "bias_act: order must be 1 or 2");
  const bool from_y = y.numel() > 0;
  TORCH_CHECK(!(from_y && order == 2), "bias_act: the second derivative needs x, not y");
  const bool has_b = b.numel() > 0;
  if (from_y) {
    check_cpu(y, "y", g);
    TORCH_CHECK(y.sizes() == g.sizes(), "bias_act: y and grad must have the same shape");
  } else {
    check_cpu(x, "x", g);
    TORCH_CHECK(x.sizes() == g.sizes(), "bias_act: x and grad must have the same shape");
  }
  if (has_b) check_cpu(b, "b", g);
  TORCH_CHECK(!has_b || b.numel() == g.size(dim), "bias_act: b must have x.shape[dim] elements");
  auto dx = at::empty_like(g);
  const RowLayout l = row_layout(g, dim);
  std::vector<double> sums(want_db ? l.rows : 0);
  AT_DISPATCH_FLOATING_TYPES(g.scalar_type(), "bias_act_grad_cpu", [&] {
    const scalar_t* gp = g.data_ptr<scalar_t>();
    const scalar_t* ref = from_y ? y.data_ptr<scalar_t>() : x.data_ptr<scalar_t>();
    const scalar_t* bp = has_b ? b.data_ptr<scalar_t>() : nullptr;
    scalar_t* dp = dx.data_ptr<scalar_t>();
    const scalar_t a = alpha, gn = gain, c = clamp;
    dispatch_act(act, [&](auto act_const) {
      constexpr int A = decltype(act_const)::value;
      at::parallel_for(0, l.rows, row_grain(l.inner), [&](int64_t r0, int64_t r1) {
        for (int64_t r = r0; r < r1; ++r) {
          const scalar_t* __restrict gr = gp + r * l.inner;
          const scalar_t* __restrict rr = ref + r * l.inner;
          scalar_t* dr = dp + r * l.inner;
          double sum;
          if (from_y && c >= scalar_t(0)) {
            sum = map_row(dr, l.inner, want_db,
                          [=](int64_t i) { return sg2::grad_from_y<A, scalar_t>(gr[i], rr[i], a, gn, c); });
          } else if (from_y) {  // no clamp: the same without its mask
            sum = map_row(dr, l.inner, want_db,
                          [=](int64_t i) { return gr[i] * gn * sg2::act_d1_from_y<A, scalar_t>(rr[i], a, gn); });
          } else {
            const scalar_t bv = has_b ? bp[r % l.channels] : scalar_t(0);
            sum = map_row(dr, l.inner, want_db, [=](int64_t i) {
              return sg2::grad_from_x<A, scalar_t>(gr[i], rr[i], bv, a, gn, c, int(order));
            });
          }
          if (want_db) sums[r] = sum;
        }
      });
    });
  });
  at::Tensor db;
  if (want_db) {
    db = at::empty({l.channels}, g.options());
    AT_DISPATCH_FLOATING_TYPES(g.scalar_type(), "bias_act_db_cpu", [&] {
      scalar_t* out = db.data_ptr<scalar_t>();
      for (int64_t ch = 0; ch < l.channels; ++ch) {
        double s = 0;
        for (int64_t r = ch; r < l.rows; r += l.channels) s += sums[r];
        out[ch] = scalar_t(s);
      }
    });
  }
  return {dx, db};
}

// One horizontal filter tap jx: output ox = phase + (s0 + s) * step_o (stored phase-major) meets input
// ix = ix0 + s * step_i, for s in [0, count).
struct TapRun {
  int64_t acc_offset, ix0, count;
};

// acc[s] += sum_t w[t] * rows[t][s * SI] for NT <= 4 input rows (the vertical taps): one pass over acc per
// horizontal tap, whatever the number of vertical taps. SI is a compile-time constant where it matters.
template <typename T, int NT, int SI>
inline void accumulate(T* __restrict acc, const T* const* rows, const T* w, int64_t n, int64_t si) {
  const T* __restrict r0 = rows[0];
  const T* __restrict r1 = rows[NT > 1 ? 1 : 0];
  const T* __restrict r2 = rows[NT > 2 ? 2 : 0];
  const T* __restrict r3 = rows[NT > 3 ? 3 : 0];
  const int64_t st = SI > 0 ? SI : si;
  for (int64_t s = 0; s < n; ++s) {
    T v = acc[s] + w[0] * r0[s * st];
    if constexpr (NT > 1) v += w[1] * r1[s * st];
    if constexpr (NT > 2) v += w[2] * r2[s * st];
    if constexpr (NT > 3) v += w[3] * r3[s * st];
    acc[s] = v;
  }
}

template <typename T, int NT>
inline void accumulate_stride(T* acc, const T* const* rows, const T* w, int64_t n, int64_t si) {
  if (si == 1) return accumulate<T, NT, 1>(acc, rows, w, n, si);
  if (si == 2) return accumulate<T, NT, 2>(acc, rows, w, n, si);
  return accumulate<T, NT, 0>(acc, rows, w, n, si);
}

template <typename T>
inline void accumulate_rows(T* acc, const T* const* rows, const T* w, int nt, int64_t n, int64_t si) {
  switch (nt) {
    case 1: return accumulate_stride<T, 1>(acc, rows, w, n, si);
    case 2: return accumulate_stride<T, 2>(acc, rows, w, n, si);
    case 3: return accumulate_stride<T, 3>(acc, rows, w, n, si);
    default: return accumulate_stride<T, 4>(acc, rows, w, n, si);
  }
}

// out = upfirdn2d(x) as a correlation with the 2-D taps w (already flipped and scaled by gain).
// Each output row is accumulated in one pass per horizontal tap: the vertical taps pick (up to 4) input rows,
// the horizontal tap adds a strided run of each (runs precomputed once per call), so zero taps and dropped
// outputs are never touched. Upsampling accumulates phase-major (contiguous) and interleaves at the end.
at::Tensor upfirdn2d_forward(const at::Tensor& x, const at::Tensor& w, int64_t upx, int64_t upy, int64_t downx,
                             int64_t downy, int64_t px0, int64_t px1, int64_t py0, int64_t py1) {
  check_cpu(x, "x", x);
  check_cpu(w, "f", x);
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble,
              "upfirdn2d (cpp): x must be float32 or float64, got ", x.scalar_type());
  TORCH_CHECK(x.dim() == 4 && w.dim() == 2, "upfirdn2d: x must be 4-D and f 2-D");
  TORCH_CHECK(upx >= 1 && upy >= 1 && downx >= 1 && downy >= 1, "upfirdn2d: up and down must be >= 1");
  const int64_t planes = x.size(0) * x.size(1), in_h = x.size(2), in_w = x.size(3);
  const int64_t kh = w.size(0), kw = w.size(1);
  const int64_t out_h = sg2::out_size(in_h, upy, downy, py0, py1, kh);
  const int64_t out_w = sg2::out_size(in_w, upx, downx, px0, px1, kw);
  TORCH_CHECK(out_h >= 1 && out_w >= 1, "upfirdn2d: empty output");
  auto out = at::empty({x.size(0), x.size(1), out_h, out_w}, x.options());

  // Horizontal runs: ox * downx = ix * upx + px0 - jx; solutions step by (upx, downx) / gcd.
  const int64_t gx = std::gcd(upx, downx), step_o = upx / gx, step_i = downx / gx;
  const int64_t phase_len = (out_w + step_o - 1) / step_o;
  std::vector<TapRun> runs(kw);
  for (int64_t jx = 0; jx < kw; ++jx) {
    TapRun run{0, 0, 0};
    for (int64_t ox = 0; ox < out_w; ++ox) {  // the first output this tap reaches
      const int64_t m = ox * downx - px0 + jx;  // = ix * upx
      if (m < 0 || m % upx != 0) continue;
      if (m / upx < in_w) {
        run.acc_offset = (ox % step_o) * phase_len + ox / step_o;
        run.ix0 = m / upx;
        run.count = std::min((out_w - 1 - ox) / step_o, (in_w - 1 - run.ix0) / step_i) + 1;
      }
      break;
    }
    runs[jx] = run;
  }

  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "upfirdn2d_cpu", [&] {
    const scalar_t* xp = x.data_ptr<scalar_t>();
    const scalar_t* wp = w.data_ptr<scalar_t>();
    scalar_t* op = out.data_ptr<scalar_t>();
    const int64_t grain = std::max<int64_t>(1, 16384 / (out_w * std::max<int64_t>(1, kh * kw / (upx * upy))));
    at::parallel_for(0, planes * out_h, grain, [&](int64_t r0, int64_t r1) {
      std::vector<scalar_t> phases(step_o > 1 ? step_o * phase_len : 0);
      for (int64_t r = r0; r < r1; ++r) {
        const int64_t plane = r / out_h, oy = r % out_h;
        scalar_t* orow = op + r * out_w;
        scalar_t* acc = step_o > 1 ? phases.data() : orow;  // phase-major accumulator, or the row itself
        std::fill(acc, acc + (step_o > 1 ? step_o * phase_len : out_w), scalar_t(0));
        const sg2::AxisTaps<int64_t> ty = sg2::axis_taps<int64_t>(oy, upy, downy, py0, kh, in_h);
        for (int64_t t0 = 0; t0 < ty.count; t0 += 4) {  // up to 4 vertical taps per pass over acc
          const int nt = int(std::min<int64_t>(4, ty.count - t0));
          const scalar_t* rows[4];
          scalar_t wv[4];
          for (int jx = 0; jx < kw; ++jx) {
            const TapRun& run = runs[jx];
            if (run.count == 0) continue;
            for (int t = 0; t < nt; ++t) {
              rows[t] = xp + (plane * in_h + ty.i0 + t0 + t) * in_w + run.ix0;
              wv[t] = wp[(ty.j0 + (t0 + t) * upy) * kw + jx];
            }
            accumulate_rows(acc + run.acc_offset, rows, wv, nt, run.count, step_i);
          }
        }
        if (step_o == 2) {  // the common upsampling by 2: interleave two phases
          const scalar_t* a0 = acc;
          const scalar_t* a1 = acc + phase_len;
          for (int64_t s = 0; s < out_w / 2; ++s) {
            orow[2 * s] = a0[s];
            orow[2 * s + 1] = a1[s];
          }
          if (out_w % 2) orow[out_w - 1] = a0[out_w / 2];
        } else if (step_o > 1) {
          for (int64_t ox = 0; ox < out_w; ++ox) orow[ox] = acc[(ox % step_o) * phase_len + ox / step_o];
        }
      }
    });
  });
  return out;
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "stylegan2_ops C++ (CPU) kernels";
  m.def("bias_act_forward", &bias_act_forward, "y = clamp(gain * act(x + b))");
  m.def("bias_act_grad", &bias_act_grad, "(dx, db) of bias_act, first or second order");
  m.def("upfirdn2d_forward", &upfirdn2d_forward, "upfirdn2d as a correlation with 2-D taps");
}
