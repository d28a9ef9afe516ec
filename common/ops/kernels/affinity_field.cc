// CPU kernel of the affinity-field (AFF / AAF) loss: per-centre-class edge and non-edge sums for several
// neighbour sizes in one pass, and its gradient w.r.t. the probabilities.
//
// Built on first use by common/ops/affinity_kernel.py (g++, tf.sysconfig flags). The maths is that of
// common/ops/affinity_fused.py (see its docstring); the XLA op and the literal losses are the test oracles.
//
// Layout. The clipped probabilities P~ = clip(P, 1e-4, 1), (1-P)~ and their logs are computed per band of rows
// (plus max(size) rows of halo) into a per-thread table [rows, W, 4, Cp] that stays in cache (Cp = C rounded up
// to 8, zero padding, so every channel loop is a whole number of 8-float vectors and padded channels contribute
// KL 0); nothing of size [N,H,W,C] is allocated besides the gradient and, with stash_logs, the forward's
// [N,H,W,2,C] logs that the backward reads instead of computing them again. Labels are copied once into a map
// padded by 2 * max(size) with -1 (ignored), so neighbour and bidirectional-ignore checks need no bounds tests.
//
// Forward: for each labelled centre p, size s and offset d with p+d and p-d labelled, KL summed over channels
// (as H(q) - <V(q), L(p)>: the pairs add vectors, one dot product per centre and size), attributed to the
// centre's class; for labels a != b channels a, b are edges (hinge
// max(0, m - KL)) and the other C-2 non-edges. Rows are split into fixed blocks (deterministic sums, double
// accumulators), run on TensorFlow's CPU thread pool.
//
// Backward: each pixel z writes its own gradient (no scatter, no atomics): for every offset d it takes the pair
// (z, z+d) in both roles -- z the centre (offset d) and z the neighbour of centre z+d (offset -d) -- which
// share the edge channels; two vector FMAs per pair, the edge channels' hinge corrections in a second, scalar
// loop over the pixel's edge pairs (listed without branches). Gradients follow TensorFlow's for the original ops
// (clip passes where 1e-4 <= v <= 1, the hinge where KL < m).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>
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

constexpr float kClipLow = 1e-4f;
constexpr float kClipHigh = 1.0f;
constexpr int kLanes = 8;
// Slots of the per-pixel temporary: clipped P, clipped 1-P, their logs.
enum Slot { kPos = 0, kNeg = 1, kLogPos = 2, kLogNeg = 3, kSlots = 4 };

inline float Clip(float v) { return std::max(std::min(v, kClipHigh), kClipLow); }

// Natural log of a positive normal float, branch-free so that loops over it vectorise (std::log does not
// without -ffast-math). Cephes' logf polynomial: |relative error| ~ 1e-7 on [1e-4, 1], the clipped range.
inline float FastLog(float x) {
  int32_t bits;
  std::memcpy(&bits, &x, sizeof(bits));
  float exponent = static_cast<float>(((bits >> 23) & 0xff) - 126);
  bits = (bits & 0x007fffff) | 0x3f000000;  // mantissa in [0.5, 1)
  float m;
  std::memcpy(&m, &bits, sizeof(m));
  const bool small = m < 0.707106781186547524f;
  exponent -= small ? 1.0f : 0.0f;
  m = (small ? m + m : m) - 1.0f;  // m in [sqrt(0.5) - 1, sqrt(2) - 1)
  const float z = m * m;
  float y = 7.0376836292e-2f;
  y = y * m - 1.1514610310e-1f;
  y = y * m + 1.1676998740e-1f;
  y = y * m - 1.2420140846e-1f;
  y = y * m + 1.4249322787e-1f;
  y = y * m - 1.6668057665e-1f;
  y = y * m + 2.0000714765e-1f;
  y = y * m - 2.4999993993e-1f;
  y = y * m + 3.3333331174e-1f;
  y = y * m * z;
  y += -2.12194440e-4f * exponent;
  y += -0.5f * z;
  return m + y + 0.693359375f * exponent;
}

// Shape, sizes and the padded label map shared by the forward and backward kernels.
struct Geometry {
  int64_t n = 0, h = 0, w = 0, c = 0, cp = 0;
  int reach = 0, pad = 0;  // pad = 2 * reach (the bidirectional ignore reads p - d and, backward, z + 2d)
  int64_t ph = 0, pw = 0;  // padded label map height / width
  std::vector<int> sizes;
  std::vector<int32_t> label_map;  // [n, ph, pw], class or -1

  int64_t Pixel(int64_t img, int64_t y, int64_t x) const { return (img * h + y) * w + x; }
  int64_t LabelIndex(int64_t img, int64_t y, int64_t x) const {
    return (img * ph + y + pad) * pw + x + pad;
  }
};

// Validates inputs and fills the geometry and padded label map.
absl::Status Prepare(OpKernelContext* ctx, const std::vector<int>& sizes, Geometry* g) {
  const Tensor& labels = ctx->input(0);
  const Tensor& probs = ctx->input(1);
  if (labels.dims() != 3) {
    return InvalidArgument("affinity_field: labels must be [N,H,W], got ", labels.shape().DebugString());
  }
  if (probs.dims() != 4) {
    return InvalidArgument("affinity_field: probs must be [N,H,W,C], got ", probs.shape().DebugString());
  }
  for (int i = 0; i < 3; ++i) {
    if (labels.dim_size(i) != probs.dim_size(i)) {
      return InvalidArgument("affinity_field: labels ", labels.shape().DebugString(), " and probs ",
                             probs.shape().DebugString(), " disagree on N,H,W");
    }
  }
  g->n = probs.dim_size(0);
  g->h = probs.dim_size(1);
  g->w = probs.dim_size(2);
  g->c = probs.dim_size(3);
  g->cp = (g->c + kLanes - 1) / kLanes * kLanes;
  g->sizes = sizes;
  g->reach = *std::max_element(sizes.begin(), sizes.end());
  g->pad = 2 * g->reach;
  g->ph = g->h + 2 * g->pad;
  g->pw = g->w + 2 * g->pad;
  g->label_map.assign(g->n * g->ph * g->pw, -1);
  const auto lab = labels.flat<int32_t>();
  for (int64_t img = 0; img < g->n; ++img) {
    for (int64_t y = 0; y < g->h; ++y) {
      for (int64_t x = 0; x < g->w; ++x) {
        const int32_t v = lab(g->Pixel(img, y, x));
        g->label_map[g->LabelIndex(img, y, x)] = (v >= 0 && v < g->c) ? v : -1;
      }
    }
  }
  return absl::OkStatus();
}

// Fills rows [y_begin, y_end) of image img into a local table [(y - y_begin) * W + x][4][Cp] and, when
// `entropy` is given, the per-pixel sum over channels of P~ log P~ + (1-P)~ log (1-P)~ (the forward's H(q)).
// The C channels are staged into Cp floats (padding 0.5, finite logs) so that the clip / log loop is whole
// vectors without a scalar tail; the padded channels are then zeroed (they contribute nothing).
template <int kCp>
void FillRows(const Geometry& g, const float* probs, int64_t img, int64_t y_begin, int64_t y_end, float* table,
              float* entropy) {
  const int64_t c = g.c, cp = kCp > 0 ? kCp : g.cp;
  std::vector<float> staged_heap(kCp > 0 ? 0 : cp);
  alignas(32) float staged_stack[kCp > 0 ? kCp : 1];
  float* staged = kCp > 0 ? staged_stack : staged_heap.data();
  std::fill(staged, staged + cp, 0.5f);
  for (int64_t i = 0; i < (y_end - y_begin) * g.w; ++i) {
    std::memcpy(staged, probs + (g.Pixel(img, y_begin, 0) + i) * c, c * sizeof(float));
    float* t = table + i * kSlots * cp;
    float h = 0.0f;
#pragma omp simd reduction(+ : h)
    for (int64_t k = 0; k < cp; ++k) {
      const float keep = k < c ? 1.0f : 0.0f;
      const float pos = Clip(staged[k]);
      const float neg = Clip(1.0f - staged[k]);
      const float log_pos = keep * FastLog(pos), log_neg = keep * FastLog(neg);
      t[kPos * cp + k] = keep * pos;
      t[kNeg * cp + k] = keep * neg;
      t[kLogPos * cp + k] = log_pos;
      t[kLogNeg * cp + k] = log_neg;
      h += pos * log_pos + neg * log_neg;
    }
    if (entropy != nullptr) entropy[i] = h;
  }
}

// Like FillRows, with the logs read from the forward's stash [N, H, W, 2, C] (log P~ then log (1-P)~ of each
// pixel) instead of computed: the backward then only clips.
template <int kCp>
void FillRowsFromLogs(const Geometry& g, const float* probs, const float* logs, int64_t img, int64_t y_begin,
                      int64_t y_end, float* table) {
  const int64_t c = g.c, cp = kCp > 0 ? kCp : g.cp;
  std::vector<float> staged_heap(kCp > 0 ? 0 : 3 * cp);
  alignas(32) float staged_stack[kCp > 0 ? 3 * kCp : 1];
  float* staged = kCp > 0 ? staged_stack : staged_heap.data();
  std::fill(staged, staged + 3 * cp, 0.0f);  // padded channels: P 0, logs 0
  for (int64_t i = 0; i < (y_end - y_begin) * g.w; ++i) {
    const int64_t pixel = g.Pixel(img, y_begin, 0) + i;
    std::memcpy(staged, probs + pixel * c, c * sizeof(float));
    std::memcpy(staged + cp, logs + pixel * 2 * c, c * sizeof(float));
    std::memcpy(staged + 2 * cp, logs + pixel * 2 * c + c, c * sizeof(float));
    float* t = table + i * kSlots * cp;
#pragma omp simd
    for (int64_t k = 0; k < cp; ++k) {
      const float keep = k < c ? 1.0f : 0.0f;
      t[kPos * cp + k] = keep * Clip(staged[k]);
      t[kNeg * cp + k] = keep * Clip(1.0f - staged[k]);
      t[kLogPos * cp + k] = staged[cp + k];
      t[kLogNeg * cp + k] = staged[2 * cp + k];
    }
  }
}

// Copies the logs of rows [y_begin, y_end) from a table that starts at row table_begin into the stash.
void StashLogs(const Geometry& g, const float* table, int64_t table_begin, int64_t img, int64_t y_begin,
               int64_t y_end, float* logs) {
  const int64_t c = g.c, cp = g.cp;
  for (int64_t i = 0; i < (y_end - y_begin) * g.w; ++i) {
    const float* t = table + ((y_begin - table_begin) * g.w + i) * kSlots * cp;
    float* out = logs + (g.Pixel(img, y_begin, 0) + i) * 2 * c;
    std::memcpy(out, t + kLogPos * cp, c * sizeof(float));
    std::memcpy(out + c, t + kLogNeg * cp, c * sizeof(float));
  }
}

// Work units: bands of `rows` rows of one image. Each band's table (its rows plus `reach` rows of halo on each
// side) is filled by the thread that processes it and stays in that core's cache; no [N,H,W,4,Cp] temporary.
// The partition is fixed by the shape and thread count, so the forward sums are deterministic.
struct Tiling {
  int64_t rows = 1, bands_per_image = 1, units = 1;

  Tiling(OpKernelContext* ctx, const Geometry& g) {
    const int threads = std::max(1, ctx->device()->tensorflow_cpu_worker_threads()->num_threads);
    // Long bands (the halo of 2 * reach rows is filled twice), short enough for 4 units per thread.
    rows = std::min<int64_t>(32, std::max<int64_t>(1, g.h));
    while (rows > 4 && g.n * ((g.h + rows - 1) / rows) < 4 * threads) rows /= 2;
    bands_per_image = (g.h + rows - 1) / rows;
    units = g.n * bands_per_image;
  }
  // Image and row range [y_begin, y_end) of a unit; its table covers [table_begin, table_end).
  void Band(const Geometry& g, int64_t unit, int64_t* img, int64_t* y_begin, int64_t* y_end,
            int64_t* table_begin, int64_t* table_end) const {
    *img = unit / bands_per_image;
    *y_begin = (unit % bands_per_image) * rows;
    *y_end = std::min<int64_t>(g.h, *y_begin + rows);
    *table_begin = std::max<int64_t>(0, *y_begin - g.reach);
    *table_end = std::min<int64_t>(g.h, *y_end + g.reach);
  }
  int64_t TableFloats(const Geometry& g) const { return (rows + 2 * g.reach) * g.w * kSlots * g.cp; }
};

// The 8 offsets of a size.
void Offsets(int size, int (*out)[2]) {
  int k = 0;
  for (int dy = -1; dy <= 1; ++dy) {
    for (int dx = -1; dx <= 1; ++dx) {
      if (dy == 0 && dx == 0) continue;
      out[k][0] = dy * size;
      out[k][1] = dx * size;
      ++k;
    }
  }
}

// KL of channel k of the pair (centre t_p, neighbour t_q).
inline float ChannelKl(const float* tp, const float* tq, int64_t cp, int64_t k) {
  return tq[kPos * cp + k] * (tq[kLogPos * cp + k] - tp[kLogPos * cp + k]) +
         tq[kNeg * cp + k] * (tq[kLogNeg * cp + k] - tp[kLogNeg * cp + k]);
}

// Forward over rows [y_begin, y_end) of image img (table and entropy: rows from table_begin): per-class edge /
// non-edge sums [C * S] each and counts [S] each.
//
// The KL of a pair summed over channels splits into a neighbour-only and a mixed part,
//   sum_c KL(p, q, c) = H(q) - <V(q), L(p)>,  V = [P~, (1-P)~], L = [log P~, log (1-P)~] (2 Cp floats each),
// H(q) = <V(q), L(q)> precomputed per pixel, so for a centre and size the pairs only add their V(q) (one vector
// add per 8 floats) and H(q), and the centre takes ONE dot product with its L(p). The edge channels' KL is
// computed per edge pair and taken out of the total again.
// kCp > 0 fixes the padded channel count at compile time (whole unrolled vectors, accumulators in registers);
// kCp == 0 reads it from the geometry.
template <int kCp>
void ForwardRows(const Geometry& g, const float* table, const float* entropy, int64_t table_begin,
                 const int* offsets, float margin, int64_t img, int64_t y_begin, int64_t y_end, double* edge_sum,
                 double* not_edge_sum, int64_t* edge_count, int64_t* not_edge_count) {
  const int64_t cp = kCp > 0 ? kCp : g.cp;
  const int64_t cp2 = 2 * cp;
  const int64_t num_sizes = g.sizes.size();
  std::vector<float> v_heap(kCp > 0 ? 0 : cp2);
  alignas(32) float v_stack[kCp > 0 ? 2 * kCp : 1];
  float* v_sum = kCp > 0 ? v_stack : v_heap.data();
  const float* edge_cells[9];  // the current centre and size's pairs with different labels
  int edge_labels[9];
  for (int64_t y = y_begin; y < y_end; ++y) {
    for (int64_t x = 0; x < g.w; ++x) {
      const int64_t centre_label = g.LabelIndex(img, y, x);
      const int a = g.label_map[centre_label];
      if (a < 0) continue;
      const int64_t centre_cell = (y - table_begin) * g.w + x;
      const float* tp = table + centre_cell * kSlots * cp;
      for (int64_t s = 0; s < num_sizes; ++s) {
        const int* off = offsets + s * 16;
        std::fill(v_sum, v_sum + cp2, 0.0f);
        // Float within a centre and size (at most 8 pairs); the class sums accumulate in double.
        float h_sum = 0.0f, edge_acc = 0.0f, edge_channels_kl = 0.0f;
        int64_t n_edge = 0, n_pairs = 0;
        for (int k = 0; k < 8; ++k) {
          const int dy = off[2 * k], dx = off[2 * k + 1];
          const int b = g.label_map[centre_label + dy * g.pw + dx];
          if (b < 0 || g.label_map[centre_label - dy * g.pw - dx] < 0) continue;
          const int64_t cell = centre_cell + dy * g.w + dx;
          const float* tq = table + cell * kSlots * cp;
#pragma omp simd
          for (int64_t ch = 0; ch < cp2; ++ch) v_sum[ch] += tq[ch];
          h_sum += entropy[cell];
          ++n_pairs;
          // Edge pairs listed without a branch (the entry is overwritten when a == b: a data-dependent branch
          // here mispredicts on every other edge); their channels a, b are handled below.
          edge_cells[n_edge] = tq;
          edge_labels[n_edge] = b;
          n_edge += a != b;
        }
        for (int64_t e = 0; e < n_edge; ++e) {
          const float* tq = edge_cells[e];
          const float kl_a = ChannelKl(tp, tq, cp, a), kl_b = ChannelKl(tp, tq, cp, edge_labels[e]);
          edge_acc += std::max(0.0f, margin - kl_a) + std::max(0.0f, margin - kl_b);
          edge_channels_kl += kl_a + kl_b;
        }
        if (n_pairs == 0) continue;
        const float* log_p = tp + kLogPos * cp;  // [log P~, log (1-P)~] of the centre, 2 Cp floats
        float dot = 0.0f;
#pragma omp simd reduction(+ : dot)
        for (int64_t ch = 0; ch < cp2; ++ch) dot += v_sum[ch] * log_p[ch];
        const float not_edge_acc = h_sum - dot - edge_channels_kl;
        edge_sum[a * num_sizes + s] += edge_acc;
        not_edge_sum[a * num_sizes + s] += not_edge_acc;
        edge_count[s] += 2 * n_edge;
        not_edge_count[s] += g.c * n_pairs - 2 * n_edge;
      }
    }
  }
}

// Edge-channel corrections of one channel of a pair (z, q) with different labels.
struct EdgeFix {
  float centre_pos = 0.0f, centre_neg = 0.0f, neighbour_pos = 0.0f, neighbour_neg = 0.0f;
};

// Channel ch of the pair (z, q = z+d), labels a != b: the hinge max(0, m - KL) replaces the non-edge term, so
// the pair's non-edge weight (g_centre, g_neighbour, already 0 for a role the pair does not play) is taken out
// and the hinge weight (hinge_*: -grad of the edge sum, 0 for an absent role) put in where KL < m. z: P~, (1-P)~
// and their logs of z at channel ch. Branch-free (selects), so that mixed edge / non-edge pairs do not
// mispredict.
inline void EdgeChannelFix(const float* z, const float* tq, int64_t cp, int ch, float margin, float hinge_centre,
                           float g_centre, float hinge_neighbour, float g_neighbour, EdgeFix* fix) {
  const float q_pos = tq[kPos * cp + ch], q_neg = tq[kNeg * cp + ch];
  const float diff_pos = tq[kLogPos * cp + ch] - z[kLogPos];
  const float diff_neg = tq[kLogNeg * cp + ch] - z[kLogNeg];
  const float kl_centre = q_pos * diff_pos + q_neg * diff_neg;  // z the centre
  const float kl_neighbour = -(z[kPos] * diff_pos + z[kNeg] * diff_neg);  // q the centre
  const float w_centre = (kl_centre < margin ? hinge_centre : 0.0f) - g_centre;
  const float w_neighbour = (kl_neighbour < margin ? hinge_neighbour : 0.0f) - g_neighbour;
  fix->centre_pos += w_centre * q_pos;
  fix->centre_neg += w_centre * q_neg;
  fix->neighbour_pos += w_neighbour * (1.0f - diff_pos);
  fix->neighbour_neg += w_neighbour * (1.0f - diff_neg);
}

// Backward over rows [y_begin, y_end) of image img: writes d loss / d probs of every pixel of those rows.
//
// Pixel z as the centre of pair (z, q = z+d) (non-edge weight g_c = grad of its class's non-edge sum):
// d KL / d P~(z) = -P~(q) / P~(z), so the pairs add g_c V(q) and z divides once at the end. As the neighbour of
// centre q (offset -d, weight g_n of q's class): d KL / d P~(z) = 1 + log P~(z) - log P~(q), so the pairs add
// g_n and g_n L(q), and z multiplies sum g_n by 1 + L(z) once at the end. Per pair that is two vector FMAs per
// 8 floats. Edge channels a, b of a pair with a != b: the hinge replaces the non-edge weight, added as scalar
// corrections of those two channels.
template <int kCp>
void BackwardRows(const Geometry& g, const float* probs, const float* table, int64_t table_begin,
                  const float* grad_sums, const int* offsets, float margin, int64_t img, int64_t y_begin,
                  int64_t y_end, float* grad) {
  const int64_t cp = kCp > 0 ? kCp : g.cp;
  const int64_t cp2 = 2 * cp;
  const int64_t c = g.c, num_sizes = g.sizes.size();
  // Local arrays when the channel count is static: the compiler then knows the table does not alias them and
  // keeps the vector accumulators in registers. The edge corrections (indexed by a runtime channel) live in a
  // separate array, so that they do not force the accumulators to memory.
  std::vector<float> acc_heap(kCp > 0 ? 0 : 2 * cp2), fix_heap(kCp > 0 ? 0 : 2 * cp2);
  alignas(32) float acc_stack[kCp > 0 ? 4 * kCp : 1];
  alignas(32) float fix_stack[kCp > 0 ? 4 * kCp : 1];
  float* acc = kCp > 0 ? acc_stack : acc_heap.data();
  float* fix_acc = kCp > 0 ? fix_stack : fix_heap.data();
  float* centre_v = acc;                 // sum g_c V(q)              [P~ part, (1-P)~ part]
  float* neighbour_log = acc + cp2;      // sum g_n L(q)
  float* centre_fix = fix_acc;           // edge-channel corrections of centre_v
  float* neighbour_fix = fix_acc + cp2;  // edge-channel corrections of the neighbour part (final values)
  // The pixel's pairs with different labels: neighbour's table cell, and b | size << 32 | roles << 48.
  std::vector<const float*> edge_cells(8 * num_sizes + 1);
  std::vector<int64_t> edge_codes(8 * num_sizes + 1);
  for (int64_t y = y_begin; y < y_end; ++y) {
    for (int64_t x = 0; x < g.w; ++x) {
      float* out = grad + g.Pixel(img, y, x) * c;
      const int64_t z_label = g.LabelIndex(img, y, x);
      const int a = g.label_map[z_label];
      if (a < 0) {  // every pair of z needs z labelled
        std::fill(out, out + c, 0.0f);
        continue;
      }
      std::fill(acc, acc + 2 * cp2, 0.0f);
      std::fill(fix_acc, fix_acc + 2 * cp2, 0.0f);
      float neighbour_weight = 0.0f;  // sum g_n
      const int64_t z_cell = (y - table_begin) * g.w + x;
      const float* tz = table + z_cell * kSlots * cp;
      const float z_a[4] = {tz[kPos * cp + a], tz[kNeg * cp + a], tz[kLogPos * cp + a], tz[kLogNeg * cp + a]};
      EdgeFix fix_a;
      int64_t num_edges = 0;
      for (int64_t s = 0; s < num_sizes; ++s) {
        const int* off = offsets + s * 16;
        const float g_centre_s = grad_sums[a * 2 * num_sizes + num_sizes + s];
        for (int k = 0; k < 8; ++k) {
          const int dy = off[2 * k], dx = off[2 * k + 1];
          const int64_t q_label = z_label + dy * g.pw + dx;
          const int b = g.label_map[q_label];
          if (b < 0) continue;
          // Role 1: z the centre, z+d the neighbour (needs z-d labelled). Role 2: z+d the centre, z the
          // neighbour at offset -d (needs z+2d labelled).
          const bool as_centre = g.label_map[z_label - dy * g.pw - dx] >= 0;
          const bool as_neighbour = g.label_map[q_label + dy * g.pw + dx] >= 0;
          if (!as_centre && !as_neighbour) continue;
          const float* tq = table + (z_cell + dy * g.w + dx) * kSlots * cp;
          const float g_centre = as_centre ? g_centre_s : 0.0f;
          const float g_neighbour = as_neighbour ? grad_sums[b * 2 * num_sizes + num_sizes + s] : 0.0f;
          const float* log_q = tq + kLogPos * cp;
#pragma omp simd
          for (int64_t ch = 0; ch < cp2; ++ch) {
            centre_v[ch] += g_centre * tq[ch];
            neighbour_log[ch] += g_neighbour * log_q[ch];
          }
          neighbour_weight += g_neighbour;
          // Edge pairs are listed without a branch (the list entry is overwritten when a == b) and corrected
          // after the pair loop: a data-dependent branch here mispredicts on every other edge.
          edge_cells[num_edges] = tq;
          edge_codes[num_edges] = b | s << 32 | static_cast<int64_t>(as_centre) << 48 |
                                  static_cast<int64_t>(as_neighbour) << 49;
          num_edges += a != b;
        }
      }
      for (int64_t e = 0; e < num_edges; ++e) {
        const float* tq = edge_cells[e];
        const int64_t code = edge_codes[e];
        const int b = static_cast<int>(code & 0xffffffff);
        const int64_t s = (code >> 32) & 0xffff;
        const float centre_on = (code >> 48) & 1, neighbour_on = (code >> 49) & 1;
        // Channel a (z's own class) accumulates in registers, channel b in the arrays.
        const float g_centre = centre_on * grad_sums[a * 2 * num_sizes + num_sizes + s];
        const float g_neighbour = neighbour_on * grad_sums[b * 2 * num_sizes + num_sizes + s];
        const float hinge_centre = centre_on * -grad_sums[a * 2 * num_sizes + s];
        const float hinge_neighbour = neighbour_on * -grad_sums[b * 2 * num_sizes + s];
        EdgeChannelFix(z_a, tq, cp, a, margin, hinge_centre, g_centre, hinge_neighbour, g_neighbour, &fix_a);
        const float z_b[4] = {tz[kPos * cp + b], tz[kNeg * cp + b], tz[kLogPos * cp + b], tz[kLogNeg * cp + b]};
        EdgeFix fix_b;
        EdgeChannelFix(z_b, tq, cp, b, margin, hinge_centre, g_centre, hinge_neighbour, g_neighbour, &fix_b);
        centre_fix[b] += fix_b.centre_pos;
        centre_fix[cp + b] += fix_b.centre_neg;
        neighbour_fix[b] += fix_b.neighbour_pos;
        neighbour_fix[cp + b] += fix_b.neighbour_neg;
      }
      centre_fix[a] += fix_a.centre_pos;
      centre_fix[cp + a] += fix_a.centre_neg;
      neighbour_fix[a] += fix_a.neighbour_pos;
      neighbour_fix[cp + a] += fix_a.neighbour_neg;
      const float* p = probs + g.Pixel(img, y, x) * c;
      for (int64_t ch = 0; ch < c; ++ch) {
        const float v = p[ch], nv = 1.0f - v;
        const float pos_pass = (v >= kClipLow && v <= kClipHigh) ? 1.0f : 0.0f;
        const float neg_pass = (nv >= kClipLow && nv <= kClipHigh) ? 1.0f : 0.0f;
        const float neighbour_pos = neighbour_weight * (1.0f + tz[kLogPos * cp + ch]) - neighbour_log[ch] +
                                    neighbour_fix[ch];
        const float neighbour_neg = neighbour_weight * (1.0f + tz[kLogNeg * cp + ch]) -
                                    neighbour_log[cp + ch] + neighbour_fix[cp + ch];
        const float centre_pos = centre_v[ch] + centre_fix[ch];
        const float centre_neg = centre_v[cp + ch] + centre_fix[cp + ch];
        out[ch] = pos_pass * (neighbour_pos - centre_pos / tz[kPos * cp + ch]) -
                  neg_pass * (neighbour_neg - centre_neg / tz[kNeg * cp + ch]);
      }
    }
  }
}

// Calls fn.template operator()<kCp>() with kCp = cp for the common padded channel counts (VOC's 21 and
// Cityscapes' 19 classes pad to 24), 0 (dynamic) otherwise.
template <typename Fn>
void DispatchChannels(int64_t cp, Fn&& fn) {
  switch (cp) {
    case 8: fn(std::integral_constant<int, 8>()); break;
    case 16: fn(std::integral_constant<int, 16>()); break;
    case 24: fn(std::integral_constant<int, 24>()); break;
    case 32: fn(std::integral_constant<int, 32>()); break;
    default: fn(std::integral_constant<int, 0>()); break;
  }
}

std::vector<int> AllOffsets(const std::vector<int>& sizes) {
  std::vector<int> offsets(sizes.size() * 16);
  for (size_t s = 0; s < sizes.size(); ++s) Offsets(sizes[s], reinterpret_cast<int(*)[2]>(&offsets[s * 16]));
  return offsets;
}

// The attributes both kernels share.
class AffinityFieldOpBase : public OpKernel {
 public:
  explicit AffinityFieldOpBase(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("sizes", &sizes_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("kld_margin", &margin_));
    for (int s : sizes_) OP_REQUIRES(ctx, s >= 1, InvalidArgument("affinity_field: sizes must be >= 1"));
  }

 protected:
  std::vector<int> sizes_;
  float margin_ = 0.0f;
};

class AffinityFieldSumsOp : public AffinityFieldOpBase {
 public:
  explicit AffinityFieldSumsOp(OpKernelConstruction* ctx) : AffinityFieldOpBase(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("stash_logs", &stash_logs_));
  }

  void Compute(OpKernelContext* ctx) override {
    Geometry g;
    OP_REQUIRES_OK(ctx, Prepare(ctx, sizes_, &g));
    const int64_t num_sizes = g.sizes.size();
    Tensor* class_sums = nullptr;
    Tensor* edge_counts = nullptr;
    Tensor* not_edge_counts = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, TensorShape({g.c, 2 * num_sizes}), &class_sums));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, TensorShape({num_sizes}), &edge_counts));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(2, TensorShape({num_sizes}), &not_edge_counts));
    Tensor* logs_t = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(
                            3, stash_logs_ ? TensorShape({g.n, g.h, g.w, 2, g.c}) : TensorShape({0}), &logs_t));
    float* logs = stash_logs_ ? logs_t->flat<float>().data() : nullptr;
    const float* probs = ctx->input(1).flat<float>().data();
    const Tiling tiling(ctx, g);
    const int64_t blocks = tiling.units;
    // Per unit: [C * S] edge sums, [C * S] non-edge sums (double), [S] edge and non-edge counts.
    std::vector<double> sums(blocks * 2 * g.c * num_sizes, 0.0);
    std::vector<int64_t> counts(blocks * 2 * num_sizes, 0);
    const std::vector<int> offsets = AllOffsets(g.sizes);
    auto work = [&](int64_t block_begin, int64_t block_end) {
      std::vector<float> table(tiling.TableFloats(g));
      std::vector<float> entropy(tiling.TableFloats(g) / (kSlots * g.cp));
      for (int64_t block = block_begin; block < block_end; ++block) {
        double* edge_sum = &sums[block * 2 * g.c * num_sizes];
        int64_t* edge_count = &counts[block * 2 * num_sizes];
        int64_t img, y_begin, y_end, table_begin, table_end;
        tiling.Band(g, block, &img, &y_begin, &y_end, &table_begin, &table_end);
        DispatchChannels(g.cp, [&](auto cp_constant) {
          FillRows<decltype(cp_constant)::value>(g, probs, img, table_begin, table_end, table.data(),
                                                 entropy.data());
          ForwardRows<decltype(cp_constant)::value>(g, table.data(), entropy.data(), table_begin,
                                                    offsets.data(), margin_, img, y_begin, y_end, edge_sum,
                                                    edge_sum + g.c * num_sizes, edge_count,
                                                    edge_count + num_sizes);
        });
        if (logs != nullptr) StashLogs(g, table.data(), table_begin, img, y_begin, y_end, logs);
      }
    };
    ctx->device()->tensorflow_cpu_worker_threads()->workers->ParallelFor(
        blocks, tiling.rows * g.w * 24 * g.cp * 20, work);

    auto out_sums = class_sums->matrix<float>();
    auto out_edge = edge_counts->flat<int32_t>();
    auto out_not_edge = not_edge_counts->flat<int32_t>();
    for (int64_t s = 0; s < num_sizes; ++s) {
      int64_t n_edge = 0, n_not_edge = 0;
      for (int64_t block = 0; block < blocks; ++block) {
        n_edge += counts[block * 2 * num_sizes + s];
        n_not_edge += counts[block * 2 * num_sizes + num_sizes + s];
      }
      OP_REQUIRES(ctx, n_not_edge <= INT32_MAX,
                  InvalidArgument("affinity_field: more than 2^31 pairs; split the batch"));
      out_edge(s) = static_cast<int32_t>(n_edge);
      out_not_edge(s) = static_cast<int32_t>(n_not_edge);
      for (int64_t cls = 0; cls < g.c; ++cls) {
        double e = 0.0, ne = 0.0;
        for (int64_t block = 0; block < blocks; ++block) {
          const double* base = &sums[block * 2 * g.c * num_sizes];
          e += base[cls * num_sizes + s];
          ne += base[g.c * num_sizes + cls * num_sizes + s];
        }
        out_sums(cls, s) = static_cast<float>(e);
        out_sums(cls, num_sizes + s) = static_cast<float>(ne);
      }
    }
  }

 private:
  bool stash_logs_ = false;
};

class AffinityFieldSumsGradOp : public AffinityFieldOpBase {
 public:
  using AffinityFieldOpBase::AffinityFieldOpBase;

  void Compute(OpKernelContext* ctx) override {
    Geometry g;
    OP_REQUIRES_OK(ctx, Prepare(ctx, sizes_, &g));
    const int64_t num_sizes = g.sizes.size();
    const Tensor& grad_sums_t = ctx->input(2);
    OP_REQUIRES(ctx,
                grad_sums_t.dims() == 2 && grad_sums_t.dim_size(0) == g.c &&
                    grad_sums_t.dim_size(1) == 2 * num_sizes,
                InvalidArgument("affinity_field_grad: grad_class_sums must be [C, 2S], got ",
                                grad_sums_t.shape().DebugString()));
    Tensor* grad_t = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, ctx->input(1).shape(), &grad_t));
    const Tensor& logs_t = ctx->input(3);
    // The forward's stash when it made one ([N, H, W, 2, C]); an empty tensor means: compute the logs here.
    const bool have_logs = logs_t.NumElements() > 0;
    OP_REQUIRES(ctx, !have_logs || logs_t.NumElements() == g.n * g.h * g.w * 2 * g.c,
                InvalidArgument("affinity_field_grad: logs must be [N,H,W,2,C] or empty, got ",
                                logs_t.shape().DebugString()));
    const float* logs = have_logs ? logs_t.flat<float>().data() : nullptr;
    const float* probs = ctx->input(1).flat<float>().data();
    const float* grad_sums = grad_sums_t.flat<float>().data();  // [C, 2S]: edge columns, then non-edge
    float* grad = grad_t->flat<float>().data();
    const std::vector<int> offsets = AllOffsets(g.sizes);
    const Tiling tiling(ctx, g);
    auto work = [&](int64_t unit_begin, int64_t unit_end) {
      std::vector<float> table(tiling.TableFloats(g));
      for (int64_t unit = unit_begin; unit < unit_end; ++unit) {
        int64_t img, y_begin, y_end, table_begin, table_end;
        tiling.Band(g, unit, &img, &y_begin, &y_end, &table_begin, &table_end);
        DispatchChannels(g.cp, [&](auto cp_constant) {
          if (logs != nullptr) {
            FillRowsFromLogs<decltype(cp_constant)::value>(g, probs, logs, img, table_begin, table_end,
                                                           table.data());
          } else {
            FillRows<decltype(cp_constant)::value>(g, probs, img, table_begin, table_end, table.data(), nullptr);
          }
          BackwardRows<decltype(cp_constant)::value>(g, probs, table.data(), table_begin, grad_sums,
                                                     offsets.data(), margin_, img, y_begin, y_end, grad);
        });
      }
    };
    ctx->device()->tensorflow_cpu_worker_threads()->workers->ParallelFor(
        tiling.units, tiling.rows * g.w * 24 * g.cp * 30, work);
  }

};

}  // namespace

REGISTER_OP("AffinityFieldSums")
    .Input("labels: int32")
    .Input("probs: float")
    .Attr("sizes: list(int) >= 1")
    .Attr("kld_margin: float")
    .Attr("stash_logs: bool = false")
    .Output("class_sums: float")
    .Output("edge_counts: int32")
    .Output("not_edge_counts: int32")
    .Output("logs: float")
    .SetShapeFn([](tensorflow::shape_inference::InferenceContext* c) {
      std::vector<int> sizes;
      TF_RETURN_IF_ERROR(c->GetAttr("sizes", &sizes));
      tensorflow::shape_inference::ShapeHandle probs;
      TF_RETURN_IF_ERROR(c->WithRank(c->input(1), 4, &probs));
      const int64_t num_sizes = sizes.size();
      c->set_output(0, c->Matrix(c->Dim(probs, 3), 2 * num_sizes));
      c->set_output(1, c->Vector(num_sizes));
      c->set_output(2, c->Vector(num_sizes));
      bool stash_logs = false;
      TF_RETURN_IF_ERROR(c->GetAttr("stash_logs", &stash_logs));
      if (stash_logs) {
        c->set_output(3, c->MakeShape({c->Dim(probs, 0), c->Dim(probs, 1), c->Dim(probs, 2), 2, c->Dim(probs, 3)}));
      } else {
        c->set_output(3, c->Vector(0));
      }
      return absl::OkStatus();
    })
    .Doc(R"doc(
Per-centre-class edge / non-edge sums of the affinity-field loss for several sizes.
class_sums: [C, 2S]; columns 0..S-1 edge sums, S..2S-1 non-edge sums.
logs: with stash_logs, [N, H, W, 2, C] log P~ and log (1-P)~ for the gradient op (which otherwise recomputes
  them); else empty.
)doc");

REGISTER_OP("AffinityFieldSumsGrad")
    .Input("labels: int32")
    .Input("probs: float")
    .Input("grad_class_sums: float")
    .Input("logs: float")
    .Attr("sizes: list(int) >= 1")
    .Attr("kld_margin: float")
    .Output("grad_probs: float")
    .SetShapeFn([](tensorflow::shape_inference::InferenceContext* c) {
      c->set_output(0, c->input(1));
      return absl::OkStatus();
    });

REGISTER_KERNEL_BUILDER(Name("AffinityFieldSums").Device(DEVICE_CPU), AffinityFieldSumsOp);
REGISTER_KERNEL_BUILDER(Name("AffinityFieldSumsGrad").Device(DEVICE_CPU), AffinityFieldSumsGradOp);
