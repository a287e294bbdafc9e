// Fused local response normalization for the CPU (Krizhevsky et al. 2012, 3.3).
//
//   t_c = k + scale * sum_{j in W(c)} x_j^2,   y_c = x_c * t_c^-beta
//   dx_j = g_j t_j^-beta - 2 scale beta x_j sum_{c: j in W(c)} g_c x_c t_c^(-beta-1)
//
// W(c) = c-lo .. c+hi clipped to c's group (tower). One pass over memory each
// way: the forward reads x and writes y, the backward reads x and g, recomputes
// t, and writes dx; nothing but x is kept for the backward. Pixels are handled
// in tiles of TP, read into float buffers in which each group of channels has
// max(lo, hi) zero channels either side: the window sum is then one flat,
// branch-free loop (v[i - lo*cs] + ... + v[i + hi*cs]) that vectorizes, and
// the zeros stand for the channels outside the group. The buffer is
// [pixel][channel] for channels_last tensors (cs = 1) and [channel][pixel] for
// NCHW ones (cs = TP), so reads and writes are contiguous runs either way.
// Arithmetic is float (double for double).
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <ATen/OpMathType.h>

#include <algorithm>
#include <cmath>
#include <vector>

namespace {

constexpr int64_t TP = 16;

struct Geometry {
  int64_t n, c, hw, sn, sc, sp;  // sizes and element strides of the tensor
  int64_t groups, cg, lo, hi;    // groups of cg channels, window c-lo .. c+hi
  int64_t pad;                   // zero channels either side of a group: max(lo, hi)
  int64_t lane;                  // padded channels per group: pad + cg + pad
  int64_t len;                   // floats in one tile buffer: TP * groups * lane
};

Geometry geometry(const at::Tensor& x, int64_t size, int64_t groups) {
  Geometry g;
  g.n = x.size(0);
  g.c = x.size(1);
  g.hw = x.size(2) * x.size(3);
  g.sn = x.stride(0);
  g.sc = x.stride(1);
  g.sp = x.stride(3);  // dense NCHW: 1; dense channels_last: C
  g.groups = groups;
  g.cg = g.c / groups;
  g.lo = (size - 1) / 2;
  g.hi = size / 2;
  g.pad = std::max(g.lo, g.hi);  // the backward's window is the transpose: c-hi .. c+lo
  g.lane = g.pad + g.cg + g.pad;
  g.len = TP * groups * g.lane;
  return g;
}

// Buffer index of (pixel p, group r, channel ch of the group); cs = channel stride
template <bool CL>
inline int64_t at_(const Geometry& g, int64_t p, int64_t r, int64_t ch) {
  if constexpr (CL) return (p * g.groups + r) * g.lane + g.pad + ch;
  else return (r * g.lane + g.pad + ch) * TP + p;
}

template <bool CL>
constexpr int64_t chan_stride() { return CL ? 1 : TP; }

// acc[i] = sum_{d=-lo..hi} v[i + d cs] wherever all terms are inside the buffer
// (every real channel is); pads of acc are not used.
template <bool CL, typename acc_t>
void window_sum(const acc_t* v, acc_t* acc, const Geometry& g, int64_t lo, int64_t hi) {
  constexpr int64_t cs = chan_stride<CL>();
  const int64_t begin = lo * cs, end = g.len - hi * cs;
  for (int64_t i = begin; i < end; ++i) acc[i] = v[i - lo * cs];
  for (int64_t d = -lo + 1; d <= hi; ++d) {
    const acc_t* src = v + d * cs;
    for (int64_t i = begin; i < end; ++i) acc[i] += src[i];
  }
}

// Read the tile of np pixels at base into buf as float; pads and lanes >= np are 0.
template <bool CL, typename scalar_t, typename acc_t>
void load_tile(const scalar_t* base, acc_t* buf, const Geometry& g, int64_t np) {
  std::fill(buf, buf + g.len, acc_t(0));
  if constexpr (CL) {
    for (int64_t p = 0; p < np; ++p)
      for (int64_t r = 0; r < g.groups; ++r) {
        const scalar_t* src = base + p * g.sp + r * g.cg;
        acc_t* dst = buf + at_<CL>(g, p, r, 0);
        for (int64_t ch = 0; ch < g.cg; ++ch) dst[ch] = static_cast<acc_t>(src[ch]);
      }
  } else {
    for (int64_t r = 0; r < g.groups; ++r)
      for (int64_t ch = 0; ch < g.cg; ++ch) {
        const scalar_t* src = base + (r * g.cg + ch) * g.sc;
        acc_t* dst = buf + at_<CL>(g, 0, r, ch);
        for (int64_t p = 0; p < np; ++p) dst[p] = static_cast<acc_t>(src[p]);
      }
  }
}

template <bool CL, typename scalar_t, typename acc_t>
void store_tile(scalar_t* base, const acc_t* buf, const Geometry& g, int64_t np) {
  if constexpr (CL) {
    for (int64_t p = 0; p < np; ++p)
      for (int64_t r = 0; r < g.groups; ++r) {
        scalar_t* dst = base + p * g.sp + r * g.cg;
        const acc_t* src = buf + at_<CL>(g, p, r, 0);
        for (int64_t ch = 0; ch < g.cg; ++ch) dst[ch] = static_cast<scalar_t>(src[ch]);
      }
  } else {
    for (int64_t r = 0; r < g.groups; ++r)
      for (int64_t ch = 0; ch < g.cg; ++ch) {
        scalar_t* dst = base + (r * g.cg + ch) * g.sc;
        const acc_t* src = buf + at_<CL>(g, 0, r, ch);
        for (int64_t p = 0; p < np; ++p) dst[p] = static_cast<scalar_t>(src[p]);
      }
  }
}

// Zero the pad channels of buf (after an op that may have written there)
template <bool CL, typename acc_t>
void zero_pads(acc_t* buf, const Geometry& g) {
  for (int64_t p = 0; p < (CL ? TP : 1); ++p)
    for (int64_t r = 0; r < g.groups; ++r) {
      acc_t* lane = buf + (CL ? (p * g.groups + r) * g.lane : r * g.lane * TP);
      const int64_t w = CL ? 1 : TP;
      std::fill(lane, lane + g.pad * w, acc_t(0));
      std::fill(lane + (g.pad + g.cg) * w, lane + g.lane * w, acc_t(0));
    }
}

// t^-beta; rsqrt forms for the paper's 0.75 and for 0.5
template <typename acc_t>
inline acc_t inv_pow(acc_t t, acc_t beta, int form) {
  if (form == 0) {
    const acc_t r = acc_t(1) / std::sqrt(t);
    return r * std::sqrt(r);
  }
  if (form == 1) return acc_t(1) / std::sqrt(t);
  return std::pow(t, -beta);
}

template <typename acc_t>
int pow_form(acc_t beta) {
  return beta == acc_t(0.75) ? 0 : beta == acc_t(0.5) ? 1 : 2;
}

// The elementwise steps, with restrict-qualified arguments so they vectorize.
template <typename acc_t>
void square(const acc_t* __restrict__ x, acc_t* __restrict__ out, int64_t m) {
  for (int64_t i = 0; i < m; ++i) out[i] = x[i] * x[i];
}

// y = x (k + s t)^-beta
template <typename acc_t, int FORM>
void normalize(const acc_t* __restrict__ x, const acc_t* __restrict__ t, acc_t* __restrict__ y, int64_t m, acc_t k,
               acc_t s, acc_t b) {
  for (int64_t i = 0; i < m; ++i) y[i] = x[i] * inv_pow(k + s * t[i], b, FORM);
}

// pw = (k + s t)^-beta and u = g x pw / (k + s t)
template <typename acc_t, int FORM>
void denominators_and_u(const acc_t* __restrict__ x, const acc_t* __restrict__ gr, const acc_t* __restrict__ t,
                        acc_t* __restrict__ pw, acc_t* __restrict__ u, int64_t m, acc_t k, acc_t s, acc_t b) {
  for (int64_t i = 0; i < m; ++i) {
    const acc_t ti = k + s * t[i], p = inv_pow(ti, b, FORM);
    pw[i] = p;
    u[i] = gr[i] * x[i] * p / ti;
  }
}

// dx = g pw + coef x w
template <typename acc_t>
void input_grad(const acc_t* __restrict__ x, const acc_t* __restrict__ gr, const acc_t* __restrict__ pw,
                const acc_t* __restrict__ w, acc_t* __restrict__ dx, int64_t m, acc_t coef) {
  for (int64_t i = 0; i < m; ++i) dx[i] = gr[i] * pw[i] + coef * x[i] * w[i];
}

template <typename F>
void for_tiles(const Geometry& g, F body) {
  const int64_t tiles = (g.hw + TP - 1) / TP;
  at::parallel_for(0, g.n * tiles, 1, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const int64_t n = i / tiles, p0 = (i % tiles) * TP;
      body(n * g.sn + p0 * g.sp, std::min(TP, g.hw - p0));
    }
  });
}

void check(const at::Tensor& x, int64_t size, int64_t groups) {
  TORCH_CHECK(x.dim() == 4, "lrn: expected an N x C x H x W tensor, got ", x.dim(), " dims");
  TORCH_CHECK(x.device().is_cpu(), "lrn: the fused kernel is for CPU tensors");
  TORCH_CHECK(size >= 1, "lrn: size must be >= 1");
  TORCH_CHECK(groups >= 1 && x.size(1) % groups == 0, "lrn: ", x.size(1),
              " channels do not split into ", groups, " groups");
}

// y = x t^-beta
template <bool CL, typename scalar_t, int FORM>
void forward_impl(const at::Tensor& x, at::Tensor& y, const Geometry& g, double scale, double beta, double k) {
  using acc_t = at::opmath_type<scalar_t>;
  const scalar_t* xp = x.const_data_ptr<scalar_t>();
  scalar_t* yp = y.mutable_data_ptr<scalar_t>();
  const acc_t s = scale, b = beta, kk = k;
  const int64_t m = g.len;
  for_tiles(g, [&](int64_t off, int64_t np) {
    thread_local std::vector<acc_t> buf;
    buf.resize(3 * m);
    acc_t *xv = buf.data(), *sq = xv + m, *t = sq + m;
    load_tile<CL>(xp + off, xv, g, np);
    square(xv, sq, m);
    window_sum<CL>(sq, t, g, g.lo, g.hi);
    normalize<acc_t, FORM>(xv, t, sq, m, kk, s, b);
    store_tile<CL>(yp + off, sq, g, np);
  });
}

// dx = g t^-beta - 2 scale beta x (window^T sum of g x t^(-beta-1))
template <bool CL, typename scalar_t, int FORM>
void backward_impl(const at::Tensor& x, const at::Tensor& grad, at::Tensor& dx, const Geometry& g, double scale,
                   double beta, double k) {
  using acc_t = at::opmath_type<scalar_t>;
  const scalar_t* xp = x.const_data_ptr<scalar_t>();
  const scalar_t* gp = grad.const_data_ptr<scalar_t>();
  scalar_t* dp = dx.mutable_data_ptr<scalar_t>();
  const acc_t s = scale, b = beta, kk = k, coef = acc_t(-2.0 * scale * beta);
  const int64_t m = g.len;
  for_tiles(g, [&](int64_t off, int64_t np) {
    thread_local std::vector<acc_t> buf;
    buf.resize(6 * m);
    acc_t *xv = buf.data(), *gv = xv + m, *sq = gv + m, *t = sq + m, *pw = t + m, *u = pw + m;
    load_tile<CL>(xp + off, xv, g, np);
    load_tile<CL>(gp + off, gv, g, np);
    square(xv, sq, m);
    window_sum<CL>(sq, t, g, g.lo, g.hi);
    denominators_and_u<acc_t, FORM>(xv, gv, t, pw, u, m, kk, s, b);
    zero_pads<CL>(u, g);  // a pad's u is 0 * inf when k = 0
    window_sum<CL>(u, t, g, g.hi, g.lo);
    input_grad(xv, gv, pw, t, sq, m, coef);
    store_tile<CL>(dp + off, sq, g, np);
  });
}

template <typename F>
void dispatch(const at::Tensor& x, at::MemoryFormat fmt, double beta, F f) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "lrn", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const int form = pow_form<acc_t>(beta);
    const bool cl = fmt == at::MemoryFormat::ChannelsLast;
    if (cl && form == 0) f.template operator()<true, scalar_t, 0>();
    else if (cl && form == 1) f.template operator()<true, scalar_t, 1>();
    else if (cl) f.template operator()<true, scalar_t, 2>();
    else if (form == 0) f.template operator()<false, scalar_t, 0>();
    else if (form == 1) f.template operator()<false, scalar_t, 1>();
    else f.template operator()<false, scalar_t, 2>();
  });
}

}  // namespace

at::Tensor lrn_forward(at::Tensor x, int64_t size, double scale, double beta, double k, int64_t groups) {
  check(x, size, groups);
  const auto fmt = x.suggest_memory_format();
  x = x.contiguous(fmt);
  at::Tensor y = at::empty_like(x);
  const Geometry g = geometry(x, size, groups);
  dispatch(x, fmt, beta, [&]<bool CL, typename scalar_t, int FORM>() {
    forward_impl<CL, scalar_t, FORM>(x, y, g, scale, beta, k);
  });
  return y;
}

at::Tensor lrn_backward(at::Tensor x, at::Tensor grad, int64_t size, double scale, double beta, double k,
                        int64_t groups) {
  check(x, size, groups);
  TORCH_CHECK(grad.sizes() == x.sizes(), "lrn: gradient and input shapes differ");
  const auto fmt = x.suggest_memory_format();
  x = x.contiguous(fmt);
  grad = grad.to(x.scalar_type()).contiguous(fmt);
  at::Tensor dx = at::empty_like(x);
  const Geometry g = geometry(x, size, groups);
  dispatch(x, fmt, beta, [&]<bool CL, typename scalar_t, int FORM>() {
    backward_impl<CL, scalar_t, FORM>(x, grad, dx, g, scale, beta, k);
  });
  return dx;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &lrn_forward, "fused LRN forward (CPU)");
  m.def("backward", &lrn_backward, "fused LRN backward (CPU)");
}
