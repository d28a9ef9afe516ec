// CPU kernels of A2GNN's per-image GNN step (a2gnn/gnn_kernel.py builds and loads them): the attention layer on
// the square-window graph and the bg / fg split cross-entropy of the upsampled node logits.
//
// == A2gnnWindowAttention / A2gnnWindowAttentionGrad ==
//
// For node p with window neighbours q = index[p, k] (k < K = (2r+1)^2; index outside [0, N) = no neighbour):
//   cos[p, k]  = <h_p, h_q> / (|h_p| |h_q| + 1e-7)
//   allowed    = neighbour exists and cos >= 0
//   w[p, :]    = softmax over the allowed slots of beta * cos + 10 * adj[p, k]  (0 elsewhere)
//   out_p      = sum_k w[p, k] h_q
// which is the original's dense layer restricted to the entries it gives non-zero weight (the -1e9 mask makes
// every other entry's weight exactly 0 in float32). The forward also returns w, cos and the norms, which the
// backward reuses ([N, K] each: 0.6 MB for 2961 nodes and K = 49), so it does not recompute the dot products.
//
// Backward (grad_out g), in two passes over the nodes, each node writing only its own entries (no scatter, no
// atomics, so the result does not depend on the thread count or scheduling):
//   pass 1, per query p:  dw_k = <g_p, h_q>, s = sum_k w_k dw_k, dscore_k = w_k (dw_k - s),
//                         dcos_k = beta dscore_k, A[p, k] = dcos_k / D_pk (d loss / d <h_p, h_q>),
//                         B[p, k] = -dcos_k cos_k / D_pk (d loss / d D_pk, D_pk = |h_p| |h_q| + 1e-7),
//                         dbeta_p = sum_k dscore_k cos_k;
//   pass 2, per node q:   the window is symmetric (p is q's neighbour in slot k iff q is p's in slot K-1-k,
//                         checked by the Python side), so every term in which q is the key of some query p
//                         is read from p's slot K-1-k instead of scattered from p:
//                         grad_h_q = sum_k [w[p, K-1-k] g_p + (A[p, K-1-k] + A[q, k]) h_p] + dn_q h_q / |h_q|,
//                         dn_q = sum_k (B[q, k] + B[p, K-1-k]) |h_p|   (p = index[q, k]; 0 / 0 := 0).
// grad_beta sums dbeta_p in double in node order. Work per layer and step: ~3 x N K F multiply-adds (the dense
// layer: ~6 x N^2 F; the blocked TensorFlow form: ~12 x N 144 F for 6 x 6 blocks with 12 x 12 key blocks).
// == A2gnnSplitCrossEntropy / A2gnnSplitCrossEntropyGrad ==
//
// The criterion of `mytool.train_with_nocrf` run twice (bg-only and fg-only seed) on the node logits bilinearly
// upsampled to the seed (align_corners=False), without the [H, W, C] prediction: each labelled pixel's C logits
// are interpolated from its 4 nodes on the fly (torch's tap weights and summation order, the taps computed by
// the Python side), the cross-entropy summed into the pixel's term (label 0: background; 1..C-1: foreground;
// 255: none). Unlabelled pixels cost nothing. Sums are double per pixel row, added in row order.
// Backward (grad_sums = d loss / d sum per term): per pixel row y, (softmax - one-hot) * grad_sums[term] is pulled
// back along x into a per-row buffer [f_w, C] (column tap weights); then each node row i adds the buffers of the
// pixel rows whose row taps hit it (row tap weights): every buffer and output row is written by one thread.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <limits>
#include <vector>

#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"
#include "tensorflow/core/lib/core/threadpool.h"

namespace {

using tensorflow::DEVICE_CPU;
using tensorflow::OpKernel;
using tensorflow::OpKernelConstruction;
using tensorflow::OpKernelContext;
using tensorflow::Tensor;
using tensorflow::TensorShape;
using tensorflow::errors::InvalidArgument;

constexpr float kEps = 1e-7f;
constexpr float kAdjScale = 10.0f;

// One SIMD register of floats (16 with AVX-512, else 8).
#ifdef __AVX512F__
constexpr int kVecFloats = 16;
#else
constexpr int kVecFloats = 8;
#endif
typedef float VecF __attribute__((vector_size(kVecFloats * sizeof(float))));

inline VecF LoadVec(const float* p) {
  VecF v;
  std::memcpy(&v, p, sizeof(v));  // unaligned load without aliasing questions
  return v;
}

// Dot product with four independent vector accumulators: one accumulator would chain every multiply-add on
// the previous one (its latency, not the arithmetic, bounded the 256-float dot products).
inline float Dot(const float* a, const float* b, int64_t n) {
  VecF s0 = {}, s1 = {}, s2 = {}, s3 = {};
  int64_t i = 0;
  for (; i + 4 * kVecFloats <= n; i += 4 * kVecFloats) {
    s0 += LoadVec(a + i) * LoadVec(b + i);
    s1 += LoadVec(a + i + kVecFloats) * LoadVec(b + i + kVecFloats);
    s2 += LoadVec(a + i + 2 * kVecFloats) * LoadVec(b + i + 2 * kVecFloats);
    s3 += LoadVec(a + i + 3 * kVecFloats) * LoadVec(b + i + 3 * kVecFloats);
  }
  const VecF s = (s0 + s1) + (s2 + s3);
  float sum = 0.0f;
  for (int lane = 0; lane < kVecFloats; ++lane) sum += s[lane];
  for (; i < n; ++i) sum += a[i] * b[i];
  return sum;
}

inline void Axpy(float alpha, const float* x, int64_t n, float* y) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) y[i] += alpha * x[i];
}

// Shapes shared by both ops: h [N, F], beta scalar, index [N, K].
struct Shape {
  int64_t n = 0, f = 0, k = 0;
};

tensorflow::Status CheckInputs(const Tensor& h, const Tensor& beta, const Tensor& index, Shape* s) {
  if (h.dims() != 2) return InvalidArgument("window_attention: h must be [N, F], got ", h.shape().DebugString());
  if (beta.NumElements() != 1) return InvalidArgument("window_attention: beta must be a scalar");
  if (index.dims() != 2 || index.dim_size(0) != h.dim_size(0))
    return InvalidArgument("window_attention: index must be [N, K] with N = ", h.dim_size(0), ", got ",
                           index.shape().DebugString());
  s->n = h.dim_size(0);
  s->f = h.dim_size(1);
  s->k = index.dim_size(1);
  return absl::OkStatus();
}

inline bool Exists(int32_t q, int64_t n) { return q >= 0 && q < n; }

void ParallelNodes(OpKernelContext* ctx, const Shape& s, int64_t cost_per_node,
                   const std::function<void(int64_t, int64_t)>& work) {
  ctx->device()->tensorflow_cpu_worker_threads()->workers->ParallelFor(s.n, cost_per_node, work);
}

class WindowAttentionOp : public OpKernel {
 public:
  explicit WindowAttentionOp(OpKernelConstruction* ctx) : OpKernel(ctx) {}

  void Compute(OpKernelContext* ctx) override {
    const Tensor& h_t = ctx->input(0);
    const Tensor& beta_t = ctx->input(1);
    const Tensor& index_t = ctx->input(2);
    const Tensor& adj_t = ctx->input(3);
    Shape s;
    OP_REQUIRES_OK(ctx, CheckInputs(h_t, beta_t, index_t, &s));
    OP_REQUIRES(ctx, adj_t.shape() == index_t.shape(),
                InvalidArgument("window_attention: adj must have index's shape, got ", adj_t.shape().DebugString()));
    Tensor *out_t = nullptr, *weights_t = nullptr, *cos_t = nullptr, *norms_t = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, h_t.shape(), &out_t));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, index_t.shape(), &weights_t));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(2, index_t.shape(), &cos_t));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(3, TensorShape({s.n}), &norms_t));
    const float* h = h_t.flat<float>().data();
    const float beta = beta_t.flat<float>()(0);
    const int32_t* index = index_t.flat<int32_t>().data();
    const float* adj = adj_t.flat<float>().data();
    float* out = out_t->flat<float>().data();
    float* weights = weights_t->flat<float>().data();
    float* cos = cos_t->flat<float>().data();
    float* norms = norms_t->flat<float>().data();
    const int64_t n = s.n, f = s.f, kk = s.k;

    ParallelNodes(ctx, s, 2 * f, [&](int64_t begin, int64_t end) {
      for (int64_t p = begin; p < end; ++p) norms[p] = std::sqrt(Dot(h + p * f, h + p * f, f));
    });
    ParallelNodes(ctx, s, 4 * kk * f, [&](int64_t begin, int64_t end) {
      std::vector<float> score(kk);
      for (int64_t p = begin; p < end; ++p) {
        const float* hp = h + p * f;
        float* w = weights + p * kk;
        float* c = cos + p * kk;
        float top = -std::numeric_limits<float>::infinity();
        for (int64_t k = 0; k < kk; ++k) {
          const int32_t q = index[p * kk + k];
          w[k] = 0.0f;
          c[k] = 0.0f;
          score[k] = -std::numeric_limits<float>::infinity();
          if (!Exists(q, n)) continue;
          c[k] = Dot(hp, h + q * f, f) / (norms[p] * norms[q] + kEps);
          if (c[k] >= 0.0f) {
            score[k] = beta * c[k] + kAdjScale * adj[p * kk + k];
            top = std::max(top, score[k]);
          }
        }
        float total = 0.0f;
        for (int64_t k = 0; k < kk; ++k) {
          if (score[k] == -std::numeric_limits<float>::infinity()) continue;
          w[k] = std::exp(score[k] - top);
          total += w[k];
        }
        float* o = out + p * f;
        std::fill(o, o + f, 0.0f);
        if (total <= 0.0f) continue;  // no allowed slot (cannot happen with the self slot present)
        const float inverse = 1.0f / total;
        for (int64_t k = 0; k < kk; ++k) {
          if (w[k] == 0.0f) continue;
          w[k] *= inverse;
          Axpy(w[k], h + index[p * kk + k] * f, f, o);
        }
      }
    });
  }
};

class WindowAttentionGradOp : public OpKernel {
 public:
  explicit WindowAttentionGradOp(OpKernelConstruction* ctx) : OpKernel(ctx) {}

  void Compute(OpKernelContext* ctx) override {
    const Tensor& h_t = ctx->input(0);
    const Tensor& beta_t = ctx->input(1);
    const Tensor& index_t = ctx->input(2);
    const Tensor& weights_t = ctx->input(3);
    const Tensor& cos_t = ctx->input(4);
    const Tensor& norms_t = ctx->input(5);
    const Tensor& grad_t = ctx->input(6);
    Shape s;
    OP_REQUIRES_OK(ctx, CheckInputs(h_t, beta_t, index_t, &s));
    OP_REQUIRES(ctx, weights_t.shape() == index_t.shape() && cos_t.shape() == index_t.shape() &&
                         norms_t.NumElements() == s.n && grad_t.shape() == h_t.shape(),
                InvalidArgument("window_attention_grad: inputs do not match the forward's shapes"));
    Tensor *grad_h_t = nullptr, *grad_beta_t = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, h_t.shape(), &grad_h_t));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, beta_t.shape(), &grad_beta_t));
    const float* h = h_t.flat<float>().data();
    const float beta = beta_t.flat<float>()(0);
    const int32_t* index = index_t.flat<int32_t>().data();
    const float* weights = weights_t.flat<float>().data();
    const float* cos = cos_t.flat<float>().data();
    const float* norms = norms_t.flat<float>().data();
    const float* g = grad_t.flat<float>().data();
    float* grad_h = grad_h_t->flat<float>().data();
    const int64_t n = s.n, f = s.f, kk = s.k;
    // Temporaries through TensorFlow's allocator, so that its memory statistics see them.
    Tensor a_t, b_t, own_dn_t, dbeta_t;
    OP_REQUIRES_OK(ctx, ctx->allocate_temp(tensorflow::DT_FLOAT, index_t.shape(), &a_t));
    OP_REQUIRES_OK(ctx, ctx->allocate_temp(tensorflow::DT_FLOAT, index_t.shape(), &b_t));
    OP_REQUIRES_OK(ctx, ctx->allocate_temp(tensorflow::DT_FLOAT, TensorShape({n}), &own_dn_t));
    OP_REQUIRES_OK(ctx, ctx->allocate_temp(tensorflow::DT_DOUBLE, TensorShape({n}), &dbeta_t));
    float* a = a_t.flat<float>().data();
    float* b = b_t.flat<float>().data();
    float* own_dn = own_dn_t.flat<float>().data();
    double* dbeta = dbeta_t.flat<double>().data();

    ParallelNodes(ctx, s, 2 * kk * f, [&](int64_t begin, int64_t end) {
      std::vector<float> dw(kk);
      for (int64_t p = begin; p < end; ++p) {
        const float* w = weights + p * kk;
        const float* c = cos + p * kk;
        float weighted = 0.0f;
        for (int64_t k = 0; k < kk; ++k) {
          dw[k] = 0.0f;
          if (w[k] == 0.0f) continue;  // not allowed (or underflowed): d score = w (dw - s) = 0
          dw[k] = Dot(g + p * f, h + index[p * kk + k] * f, f);
          weighted += w[k] * dw[k];
        }
        double beta_part = 0.0;
        float dn = 0.0f;
        for (int64_t k = 0; k < kk; ++k) {
          const int64_t slot = p * kk + k;
          a[slot] = 0.0f;
          b[slot] = 0.0f;
          if (w[k] == 0.0f) continue;
          const float dscore = w[k] * (dw[k] - weighted);
          beta_part += static_cast<double>(dscore * c[k]);
          const float dcos = beta * dscore;
          const float nq = norms[index[slot]];
          const float denominator = norms[p] * nq + kEps;
          a[slot] = dcos / denominator;
          b[slot] = -dcos * c[k] / denominator;
          dn += b[slot] * nq;
        }
        dbeta[p] = beta_part;
        own_dn[p] = dn;
      }
    });
    ParallelNodes(ctx, s, 4 * kk * f, [&](int64_t begin, int64_t end) {
      for (int64_t q = begin; q < end; ++q) {
        float* gq = grad_h + q * f;
        std::fill(gq, gq + f, 0.0f);
        float dn = own_dn[q];
        for (int64_t k = 0; k < kk; ++k) {
          const int32_t p = index[q * kk + k];
          if (!Exists(p, n)) continue;
          const int64_t back = p * kk + (kk - 1 - k);  // q's slot in p's window
          if (weights[back] != 0.0f) Axpy(weights[back], g + p * f, f, gq);
          const float coefficient = a[back] + a[q * kk + k];
          if (coefficient != 0.0f) Axpy(coefficient, h + p * f, f, gq);
          dn += b[back] * norms[p];
        }
        if (norms[q] > 0.0f) Axpy(dn / norms[q], h + q * f, f, gq);
      }
    });
    double total = 0.0;
    for (int64_t p = 0; p < n; ++p) total += dbeta[p];
    grad_beta_t->flat<float>()(0) = static_cast<float>(total);
  }
};

// exp(x) for x <= 0 (shifted logits), branch-free so that the class loops vectorise (std::exp does not without
// -ffast-math): Cephes' expf range reduction and polynomial, |relative error| ~ 2e-7; 0 below -87.
inline float FastExp(float x) {
  const bool tiny = x < -87.0f;
  x = std::max(x, -87.0f);
  const float n = std::floor(x * 1.44269504088896341f + 0.5f);
  x = x - n * 0.693359375f + n * 2.12194440e-4f;
  const float z = x * x;
  float y = 1.9875691500e-4f;
  y = y * x + 1.3981999507e-3f;
  y = y * x + 8.3334519073e-3f;
  y = y * x + 4.1665795894e-2f;
  y = y * x + 1.6666665459e-1f;
  y = y * x + 5.0000001201e-1f;
  y = y * z + x + 1.0f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return tiny ? 0.0f : y * scale;
}

struct Taps {
  const int32_t* index;  // [size, 2]
  const float* weight;   // [size, 2]
};

// Shapes, taps and data of one call (a kernel's Compute may run concurrently: no state in the OpKernel).
struct SplitCrossEntropyCall {
  // Checks shapes, taps and labels; fills the geometry.
  tensorflow::Status Prepare(OpKernelContext* ctx) {
    const Tensor& logits_t = ctx->input(0);
    const Tensor& labels_t = ctx->input(1);
    if (logits_t.dims() != 3) return InvalidArgument("split_cross_entropy: logits must be [f_h, f_w, C]");
    if (labels_t.dims() != 2) return InvalidArgument("split_cross_entropy: labels must be [H, W]");
    f_h = logits_t.dim_size(0);
    f_w = logits_t.dim_size(1);
    classes = logits_t.dim_size(2);
    h = labels_t.dim_size(0);
    w = labels_t.dim_size(1);
    const int64_t sizes[2] = {h, w};
    const int64_t limits[2] = {f_h, f_w};
    for (int axis = 0; axis < 2; ++axis) {
      const Tensor& index = ctx->input(2 + 2 * axis);
      const Tensor& weight = ctx->input(3 + 2 * axis);
      if (index.dims() != 2 || index.dim_size(0) != sizes[axis] || index.dim_size(1) != 2 ||
          weight.shape() != index.shape())
        return InvalidArgument("split_cross_entropy: taps must be [", sizes[axis], ", 2]");
      const int32_t* values = index.flat<int32_t>().data();
      for (int64_t i = 0; i < 2 * sizes[axis]; ++i)
        if (values[i] < 0 || values[i] >= limits[axis])
          return InvalidArgument("split_cross_entropy: tap index out of range");
      taps[axis] = {values, weight.flat<float>().data()};
    }
    logits = logits_t.flat<float>().data();
    labels = labels_t.flat<int32_t>().data();
    const int64_t pixels = h * w;
    for (int64_t i = 0; i < pixels; ++i)
      if (labels[i] != kIgnore && (labels[i] < 0 || labels[i] >= classes))
        return InvalidArgument("split_cross_entropy: label ", labels[i], " outside [0, ", classes, ") and not ",
                               kIgnore);
    return absl::OkStatus();
  }

  // Interpolated logits of pixel (y, x) into `out` [C]: i00 w00 + (i01 w01 + (i10 w10 + i11 w11)).
  void PixelLogits(int64_t y, int64_t x, float* out) const {
    const int32_t* ry = taps[0].index + 2 * y;
    const float* rw = taps[0].weight + 2 * y;
    const int32_t* cx = taps[1].index + 2 * x;
    const float* cw = taps[1].weight + 2 * x;
    const float w00 = rw[0] * cw[0], w01 = rw[0] * cw[1], w10 = rw[1] * cw[0], w11 = rw[1] * cw[1];
    const float* a00 = logits + (ry[0] * f_w + cx[0]) * classes;
    const float* a01 = logits + (ry[0] * f_w + cx[1]) * classes;
    const float* a10 = logits + (ry[1] * f_w + cx[0]) * classes;
    const float* a11 = logits + (ry[1] * f_w + cx[1]) * classes;
#pragma omp simd
    for (int64_t c = 0; c < classes; ++c) out[c] = a00[c] * w00 + (a01[c] * w01 + (a10[c] * w10 + a11[c] * w11));
  }

  // Shifts `l` [C] by its maximum in place and returns log(sum(exp(l - max))).
  float ShiftAndLogSum(float* l) const {
    float top = l[0];
    for (int64_t c = 1; c < classes; ++c) top = std::max(top, l[c]);
    float total = 0.0f;
#pragma omp simd reduction(+ : total)
    for (int64_t c = 0; c < classes; ++c) {
      l[c] -= top;
      total += FastExp(l[c]);
    }
    return std::log(total);
  }

  static constexpr int32_t kIgnore = 255;
  int64_t f_h = 0, f_w = 0, classes = 0, h = 0, w = 0;
  Taps taps[2] = {};
  const float* logits = nullptr;
  const int32_t* labels = nullptr;
};

class SplitCrossEntropyOp : public OpKernel {
 public:
  explicit SplitCrossEntropyOp(OpKernelConstruction* ctx) : OpKernel(ctx) {}

  void Compute(OpKernelContext* ctx) override {
    SplitCrossEntropyCall call;
    OP_REQUIRES_OK(ctx, call.Prepare(ctx));
    const SplitCrossEntropyCall& g = call;
    Tensor *sums_t = nullptr, *counts_t = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, TensorShape({2}), &sums_t));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, TensorShape({2}), &counts_t));
    int64_t bg_pixels = 0, fg_pixels = 0;
    for (int64_t i = 0; i < g.h * g.w; ++i) {
      bg_pixels += g.labels[i] == 0;
      fg_pixels += g.labels[i] != 0 && g.labels[i] != SplitCrossEntropyCall::kIgnore;
    }
    counts_t->flat<float>()(0) = static_cast<float>(bg_pixels);
    counts_t->flat<float>()(1) = static_cast<float>(fg_pixels);
    std::vector<double> row_sums(2 * g.h, 0.0);
    ctx->device()->tensorflow_cpu_worker_threads()->workers->ParallelFor(
        g.h, g.w * g.classes * 30, [&](int64_t begin, int64_t end) {
          std::vector<float> l(g.classes);
          for (int64_t y = begin; y < end; ++y) {
            double bg = 0.0, fg = 0.0;
            for (int64_t x = 0; x < g.w; ++x) {
              const int32_t label = g.labels[y * g.w + x];
              if (label == SplitCrossEntropyCall::kIgnore) continue;
              g.PixelLogits(y, x, l.data());
              const float ce = g.ShiftAndLogSum(l.data()) - l[label];
              (label == 0 ? bg : fg) += ce;
            }
            row_sums[2 * y] = bg;
            row_sums[2 * y + 1] = fg;
          }
        });
    double bg = 0.0, fg = 0.0;
    for (int64_t y = 0; y < g.h; ++y) {
      bg += row_sums[2 * y];
      fg += row_sums[2 * y + 1];
    }
    sums_t->flat<float>()(0) = static_cast<float>(bg);
    sums_t->flat<float>()(1) = static_cast<float>(fg);
  }
};

class SplitCrossEntropyGradOp : public OpKernel {
 public:
  explicit SplitCrossEntropyGradOp(OpKernelConstruction* ctx) : OpKernel(ctx) {}

  void Compute(OpKernelContext* ctx) override {
    SplitCrossEntropyCall call;
    OP_REQUIRES_OK(ctx, call.Prepare(ctx));
    const SplitCrossEntropyCall& g = call;
    const Tensor& grad_sums_t = ctx->input(6);
    OP_REQUIRES(ctx, grad_sums_t.NumElements() == 2,
                InvalidArgument("split_cross_entropy_grad: grad_sums must have 2 elements"));
    const float scale[2] = {grad_sums_t.flat<float>()(0), grad_sums_t.flat<float>()(1)};
    Tensor* grad_t = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, ctx->input(0).shape(), &grad_t));
    float* grad = grad_t->flat<float>().data();
    const int64_t row_floats = g.f_w * g.classes;
    Tensor rows_t;  // per pixel row: its gradient pulled back along x (TensorFlow's allocator: counted)
    OP_REQUIRES_OK(ctx, ctx->allocate_temp(tensorflow::DT_FLOAT, TensorShape({g.h, row_floats}), &rows_t));
    float* rows = rows_t.flat<float>().data();
    auto* workers = ctx->device()->tensorflow_cpu_worker_threads()->workers;
    workers->ParallelFor(g.h, g.w * g.classes * 40, [&](int64_t begin, int64_t end) {
      std::vector<float> l(g.classes);
      for (int64_t y = begin; y < end; ++y) {
        float* row = rows + y * row_floats;
        std::fill(row, row + row_floats, 0.0f);
        for (int64_t x = 0; x < g.w; ++x) {
          const int32_t label = g.labels[y * g.w + x];
          if (label == SplitCrossEntropyCall::kIgnore) continue;
          g.PixelLogits(y, x, l.data());
          const float log_sum = g.ShiftAndLogSum(l.data());
          const float s = scale[label == 0 ? 0 : 1];
#pragma omp simd
          for (int64_t c = 0; c < g.classes; ++c) l[c] = (FastExp(l[c] - log_sum) - (c == label ? 1.0f : 0.0f)) * s;
          const int32_t* cx = g.taps[1].index + 2 * x;
          const float* cw = g.taps[1].weight + 2 * x;
          Axpy(cw[0], l.data(), g.classes, row + cx[0] * g.classes);
          Axpy(cw[1], l.data(), g.classes, row + cx[1] * g.classes);
        }
      }
    });
    workers->ParallelFor(g.f_h, g.h * row_floats, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        float* out = grad + i * row_floats;
        std::fill(out, out + row_floats, 0.0f);
        for (int64_t y = 0; y < g.h; ++y) {
          for (int tap = 0; tap < 2; ++tap) {
            if (g.taps[0].index[2 * y + tap] == i)
              Axpy(g.taps[0].weight[2 * y + tap], rows + y * row_floats, row_floats, out);
          }
        }
      }
    });
  }
};

}  // namespace

REGISTER_OP("A2gnnWindowAttention")
    .Input("h: float")
    .Input("beta: float")
    .Input("index: int32")
    .Input("adj: float")
    .Output("out: float")
    .Output("weights: float")
    .Output("cos: float")
    .Output("norms: float")
    .SetShapeFn([](tensorflow::shape_inference::InferenceContext* c) {
      tensorflow::shape_inference::ShapeHandle h, index;
      TF_RETURN_IF_ERROR(c->WithRank(c->input(0), 2, &h));
      TF_RETURN_IF_ERROR(c->WithRank(c->input(2), 2, &index));
      c->set_output(0, h);
      c->set_output(1, index);
      c->set_output(2, index);
      c->set_output(3, c->Vector(c->Dim(h, 0)));
      return absl::OkStatus();
    })
    .Doc(R"doc(
A2GNN attention layer on a square-window graph. out [N, F]; weights, cos [N, K] (softmax weights, 0 where not
allowed; cosines); norms [N] row norms of h. Only `out` is differentiable (A2gnnWindowAttentionGrad).
)doc");

REGISTER_OP("A2gnnWindowAttentionGrad")
    .Input("h: float")
    .Input("beta: float")
    .Input("index: int32")
    .Input("weights: float")
    .Input("cos: float")
    .Input("norms: float")
    .Input("grad_out: float")
    .Output("grad_h: float")
    .Output("grad_beta: float")
    .SetShapeFn([](tensorflow::shape_inference::InferenceContext* c) {
      c->set_output(0, c->input(0));
      c->set_output(1, c->input(1));
      return absl::OkStatus();
    });

REGISTER_KERNEL_BUILDER(Name("A2gnnWindowAttention").Device(DEVICE_CPU), WindowAttentionOp);
REGISTER_KERNEL_BUILDER(Name("A2gnnWindowAttentionGrad").Device(DEVICE_CPU), WindowAttentionGradOp);

REGISTER_OP("A2gnnSplitCrossEntropy")
    .Input("logits: float")
    .Input("labels: int32")
    .Input("row_taps: int32")
    .Input("row_weights: float")
    .Input("col_taps: int32")
    .Input("col_weights: float")
    .Output("sums: float")
    .Output("counts: float")
    .SetShapeFn([](tensorflow::shape_inference::InferenceContext* c) {
      c->set_output(0, c->Vector(2));
      c->set_output(1, c->Vector(2));
      return absl::OkStatus();
    })
    .Doc(R"doc(
Sums of the pixel cross-entropies of the bilinearly upsampled node logits [f_h, f_w, C] over the background
(label 0) and foreground (1..C-1) pixels of labels [H, W] (255: none), and the two pixel counts. The taps
are the [size, 2] source indices and weights of align_corners=False resizing along y (rows) and x (columns).
)doc");

REGISTER_OP("A2gnnSplitCrossEntropyGrad")
    .Input("logits: float")
    .Input("labels: int32")
    .Input("row_taps: int32")
    .Input("row_weights: float")
    .Input("col_taps: int32")
    .Input("col_weights: float")
    .Input("grad_sums: float")
    .Output("grad_logits: float")
    .SetShapeFn([](tensorflow::shape_inference::InferenceContext* c) {
      c->set_output(0, c->input(0));
      return absl::OkStatus();
    });

REGISTER_KERNEL_BUILDER(Name("A2gnnSplitCrossEntropy").Device(DEVICE_CPU), SplitCrossEntropyOp);
REGISTER_KERNEL_BUILDER(Name("A2gnnSplitCrossEntropyGrad").Device(DEVICE_CPU), SplitCrossEntropyGradOp);
