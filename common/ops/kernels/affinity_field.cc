// CPU kernel of the affinity-field (AFF / AAF) loss: per-centre-class edge and non-edge sums for several
// neighbour sizes in one pass, and its gradient w.r.t. the probabilities, or with from_logits w.r.t. the logits
// (the kernels then take the softmax themselves).
//
// Built on first use by common/ops/affinity_kernel.py (g++, tf.sysconfig flags). The maths is that of
// common/ops/affinity_fused.py (see its docstring); the XLA op and the literal losses are the test oracles.
//
// Layout. The clipped probabilities P~ = clip(P, 1e-4, 1), (1-P)~ and their logs are computed per band of rows
// (plus max(size) rows of halo) into a per-thread table [rows + 2 reach, W + 2 reach, 4, Cp] that stays in cache
// (Cp = C rounded up to 8, zero padding, so every channel loop is a whole number of vectors and padded channels
// contribute KL 0; cells outside the image are zero, so neighbours are read without bounds tests). Each cell is
// written in whole vectors straight from the input (with from_logits: the softmax's max, exps and sum per pixel,
// 1 / sum and max + log(sum) in vectors over a row's pixels, log P~ = max(x - max - log sum, log 1e-4), so one
// polynomial log per element instead of two). Nothing of size [N,H,W,C] is allocated besides the gradient and,
// with stash_logs, the forward's [N,H,W,2,C] logs. Labels are copied once into a map padded by 2 * max(size)
// with -1 (ignored). Per image row, the pair flags (valid pair, edge pair, and the backward's per-pair weights)
// are computed for the whole row in vector loops over x from contiguous label reads; the pair loops then take a
// weight per pair (0 for an invalid pair) instead of branching on labels.
//
// Forward: for each labelled centre p, size s and offset d with p+d and p-d labelled, KL summed over channels
// (as H(q) - <V(q), L(p)>: the pairs add vectors, one dot product per centre and size), attributed to the
// centre's class; for labels a != b channels a, b are edges (hinge max(0, m - KL)) and the other C-2 non-edges,
// computed in one scalar loop per centre over its edge pairs of all sizes. Rows are split into fixed blocks
// (deterministic sums: float within a centre and size, double across), run on TensorFlow's CPU thread pool.
//
// Backward: each pixel z writes its own gradient (no scatter, no atomics): for every offset d it takes the pair
// (z, z+d) in both roles -- z the centre (offset d) and z the neighbour of centre z+d (offset -d) -- which
// share the edge channels; two vector FMAs per pair, the edge channels' hinge corrections in a second, scalar
// loop over the pixel's edge pairs of all sizes (the set bits of the row's edge flags, one 64-bit mask for up to 8
// sizes). The per-pair weights come from the row flags, which read them contiguously from per-pixel planes of
// grad_class_sums; the edge loop reads the hinge weights of its few pairs from the same planes. The final combine
// (clip masks, d/dP~ - d/d(1-P)~, the softmax's Jacobian P (g - <g, P>)) is in whole vectors. Gradients follow
// TensorFlow's for the original ops (clip passes where 1e-4 <= v <= 1, the hinge where KL < m).
//
// Where the time goes ([16, 60, 60, 21], sizes 1-3, the benchmark's 6x6-block labels, where about 40% of the
// pairs are edges -- real label maps have far fewer; perf samples of forward + backward, 2 threads, on the shared
// 2-core machine): backward pair and edge loops ~40% (edge corrections about half of it), forward ~22% (edge
// hinges ~45% of it), table fills ~17% (one per op: the backward recomputes the table rather than reading a
// [N,H,W,4,Cp] stash), row flags ~8%. The scalar edge work is what bounds it: per edge pair two channels, each a
// KL in both directions, a hinge test and four corrections, behind a data-dependent loop exit.
// History (each step measured on this shared machine; differences under ~10% are within its noise):
// - per-pair label branches and per-pixel clip / log with libc memcpy staging: ~22 ms forward, ~24 ms backward
//   (one thread); branch-free pair loops with per-row vectorised flags, 60-row bands, the backward's edge loops of
//   all sizes merged: 11 / 20 ms.
// - built with AVX-512VL where present, keeping 8-float vectors (32 registers: the backward's accumulators stop
//   spilling; backward 0.88x, forward 0.96x); the softmax's Jacobian inside the gradient op.
// - this pass (benchmark step, kernel vs the previous build alternately: 25-33 ms vs 33-41 ms): the softmax
//   inside the kernels (from_logits: TensorFlow's softmax, its [N,H,W,C] buffer and its page faults are gone),
//   cells written in whole vectors (the row staging and per-slot copies were a third of the fill), the
//   backward's final combine in vectors (its scalar <g, P> chain was a fifth of the backward loop), hinge weights
//   read for edge pairs only (two of the backward row flags' four arrays gone), the forward's edge pairs of all
//   sizes in one loop.
// Measured and not kept: AVX2 gathers for the edge channels of a centre's 8 neighbours (as slow as the ~3 scalar
// edge pairs they replace); 16-float AVX-512 vectors (no faster); stashing the forward's logs for the backward
// (costs the forward more than it saves; off by default); one fixed shard per thread instead of the adaptive
// split (1.08x / 1.11x the time).
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <mutex>
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

// One SIMD register of floats: 8 (AVX2 / AVX-512VL ymm registers), or 16 when built with AFFINITY_FIELD_VEC16 for
// AVX-512 (measured no faster; GCC splits wider generic vectors through memory, which made an AVX2 build 5x
// slower). Built with AVX-512VL the 8-float code gets 32 vector registers instead of 16: the backward's 12
// accumulators no longer spill to the stack (backward ~12% faster, forward ~4%, same results bit for bit). A
// pixel's V = [P~, (1-P)~] and L = [log P~, log (1-P)~] are 2 Cp floats each, a whole number of registers
// (Cp % 8 == 0).
#if defined(__AVX512F__) && defined(AFFINITY_FIELD_VEC16)
constexpr int kVecFloats = 16;
#else
constexpr int kVecFloats = 8;
#endif
typedef float VecF __attribute__((vector_size(kVecFloats * sizeof(float))));
typedef int32_t VecI __attribute__((vector_size(kVecFloats * sizeof(int32_t))));  // lanes of VecF comparisons

inline VecF Splat(float v) { return VecF{} + v; }
inline VecF LoadVec(const float* p) {
  VecF v;
  std::memcpy(&v, p, sizeof(v));  // an unaligned vector load, without aliasing questions
  return v;
}
inline void StoreVec(float* p, const VecF& v) { std::memcpy(p, &v, sizeof(v)); }
// Stores the first n lanes (n <= kVecFloats).
inline void StoreLanes(float* p, const VecF& v, int64_t n) {
  if (n == kVecFloats) {
    StoreVec(p, v);
    return;
  }
  for (int64_t i = 0; i < n; ++i) p[i] = v[i];
}
inline VecI AsInt(const VecF& v) {
  VecI i;
  std::memcpy(&i, &v, sizeof(i));
  return i;
}
inline VecF AsFloat(const VecI& i) {
  VecF v;
  std::memcpy(&v, &i, sizeof(v));
  return v;
}
inline VecF Min(const VecF& a, const VecF& b) { return a < b ? a : b; }
inline VecF Max(const VecF& a, const VecF& b) { return a > b ? a : b; }
inline VecF ClipVec(const VecF& v) { return Max(Min(v, Splat(kClipHigh)), Splat(kClipLow)); }
// Horizontal sum / max as a tree (depth log2(lanes) instead of a chain of lanes - 1 dependent operations).
inline float SumLanes(const VecF& v) {
  float a[kVecFloats];
  std::memcpy(a, &v, sizeof(a));
  for (int width = kVecFloats / 2; width >= 1; width /= 2) {
    for (int i = 0; i < width; ++i) a[i] += a[i + width];
  }
  return a[0];
}
inline float MaxLanes(const VecF& v) {
  float a[kVecFloats];
  std::memcpy(a, &v, sizeof(a));
  for (int width = kVecFloats / 2; width >= 1; width /= 2) {
    for (int i = 0; i < width; ++i) a[i] = std::max(a[i], a[i + width]);
  }
  return a[0];
}

// Natural log of positive normal floats, branch-free. Cephes' logf polynomial: |relative error| ~ 1e-7 on
// [1e-4, 1], the clipped range.
inline VecF LogVec(const VecF& x) {
  const VecI bits = AsInt(x);
  VecF exponent = __builtin_convertvector(((bits >> 23) & 0xff) - 126, VecF);
  VecF m = AsFloat((bits & 0x007fffff) | 0x3f000000);  // mantissa in [0.5, 1)
  const VecI small = m < Splat(0.707106781186547524f);
  exponent = small ? exponent - 1.0f : exponent;
  m = (small ? m + m : m) - 1.0f;  // m in [sqrt(0.5) - 1, sqrt(2) - 1)
  const VecF z = m * m;
  VecF y = Splat(7.0376836292e-2f);
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

// exp of floats <= 0 (a logit minus the pixel's largest), branch-free. Cephes' expf: |relative error| ~ 1e-7;
// arguments below -87.3 give exp(-87.3) ~ 1e-38 instead of a smaller number or 0 (far below the 1e-4 clip).
inline VecF ExpVec(VecF x) {
  x = Max(x, Splat(-87.3f));
  const VecF fx = x * 1.44269504088896341f + 0.5f;
  VecF n = __builtin_convertvector(__builtin_convertvector(fx, VecI), VecF);  // truncation toward 0
  n = n > fx ? n - 1.0f : n;                                                // floor
  x = x - n * 0.693359375f;
  x = x - n * -2.12194440e-4f;
  const VecF z = x * x;
  VecF y = Splat(1.9875691500e-4f);
  y = y * x + 1.3981999507e-3f;
  y = y * x + 8.3334519073e-3f;
  y = y * x + 4.1665795894e-2f;
  y = y * x + 1.6666665459e-1f;
  y = y * x + 5.0000001201e-1f;
  y = y * z + x + 1.0f;
  return y * AsFloat((__builtin_convertvector(n, VecI) + 127) << 23);
}

// Masks of the first num_vecs vectors of a pixel's padded channels: all ones on the C channel lanes, 0 on padding.
inline void ChannelLanes(int64_t c, int num_vecs, VecI* lane_ok) {
  for (int i = 0; i < num_vecs; ++i) {
    for (int lane = 0; lane < kVecFloats; ++lane) lane_ok[i][lane] = i * kVecFloats + lane < c ? -1 : 0;
  }
}

// log of the lower clip, as LogVec computes it (the log of a clipped probability below the clip).
inline float LogClipLow() {
  static const float value = LogVec(Splat(kClipLow))[0];
  return value;
}

// Bytes the kernels keep allocated between calls (per-thread band buffers, padded label maps, gradient planes):
// memory a step uses that a resident-set reading taken after warm-up cannot see. Op AffinityFieldCachedBytes
// reports it (the benchmark adds it to its peak-memory reading).
std::atomic<int64_t> cached_bytes{0};

// Resizes (assign: resizes and fills) a buffer kept between calls, counting its growth in cached_bytes.
template <typename T>
void KeepSized(std::vector<T>* buffer, size_t size) {
  const size_t before = buffer->capacity();
  buffer->resize(size);
  cached_bytes += static_cast<int64_t>((buffer->capacity() - before) * sizeof(T));
}
template <typename T>
void KeepAssigned(std::vector<T>* buffer, size_t size, const T& value) {
  const size_t before = buffer->capacity();
  buffer->assign(size, value);
  cached_bytes += static_cast<int64_t>((buffer->capacity() - before) * sizeof(T));
}

// Shape, sizes, pair offsets and the padded label map shared by the forward and backward kernels.
struct Geometry {
  int64_t n = 0, h = 0, w = 0, c = 0, cp = 0;
  int reach = 0, pad = 0;  // pad = 2 * reach (the bidirectional ignore reads p - d and, backward, z + 2d)
  int64_t ph = 0, pw = 0;  // padded label map height / width
  int64_t tw = 0;          // table width: W plus `reach` padding cells on both sides
  std::vector<int> sizes;
  const int32_t* label_map = nullptr;  // [n, ph, pw], class or -1 (in the op's buffer)
  // Per size s and neighbour k (index s * 8 + k): offset of the neighbour in the label map and in the table
  // (in cells), so that the pair loops do no index arithmetic.
  std::vector<int64_t> label_offset, cell_offset;

  int64_t Pixel(int64_t img, int64_t y, int64_t x) const { return (img * h + y) * w + x; }
  int64_t LabelIndex(int64_t img, int64_t y, int64_t x) const {
    return (img * ph + y + pad) * pw + x + pad;
  }
  int64_t CellFloats() const { return kSlots * cp; }
};

// Validates inputs and fills the geometry and padded label map.
absl::Status Prepare(OpKernelContext* ctx, const std::vector<int>& sizes, std::vector<int32_t>* label_buffer,
                     Geometry* g) {
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
  g->tw = g->w + 2 * g->reach;
  for (int size : sizes) {
    for (int dy = -1; dy <= 1; ++dy) {
      for (int dx = -1; dx <= 1; ++dx) {
        if (dy == 0 && dx == 0) continue;
        g->label_offset.push_back((dy * g->pw + dx) * size);
        g->cell_offset.push_back((dy * g->tw + dx) * size);
      }
    }
  }
  KeepAssigned(label_buffer, g->n * g->ph * g->pw, -1);
  int32_t* label_map = label_buffer->data();
  g->label_map = label_map;
  const auto lab = labels.flat<int32_t>();
  for (int64_t img = 0; img < g->n; ++img) {
    for (int64_t y = 0; y < g->h; ++y) {
      for (int64_t x = 0; x < g->w; ++x) {
        const int32_t v = lab(g->Pixel(img, y, x));
        label_map[g->LabelIndex(img, y, x)] = (v >= 0 && v < g->c) ? v : -1;
      }
    }
  }
  return absl::OkStatus();
}

// Work units: bands of `rows` rows of one image. Each band's table covers its rows plus `reach` rows of halo on
// each side and `reach` columns on each side ([rows + 2 reach, tw] cells of [4][Cp] floats); cells outside the
// image are zero, so every neighbour of a band pixel can be read without a bounds test (pairs that leave the
// image have weight 0). The table is filled by the thread that processes the band and stays in that core's
// cache; there is no [N,H,W,4,Cp] temporary. The partition is fixed by the shape and thread count, so the
// forward sums are deterministic.
struct Tiling {
  int64_t rows = 1, bands_per_image = 1, units = 1;

  Tiling(OpKernelContext* ctx, const Geometry& g) {
    const int threads = std::max(1, ctx->device()->tensorflow_cpu_worker_threads()->num_threads);
    // Long bands (the halo of 2 * reach rows is filled twice: 10% more rows filled for 60-row bands, 19% for 32),
    // short enough for 4 units per thread.
    rows = std::min<int64_t>(64, std::max<int64_t>(1, g.h));
    while (rows > 4 && g.n * ((g.h + rows - 1) / rows) < 4 * threads) rows /= 2;
    bands_per_image = (g.h + rows - 1) / rows;
    units = g.n * bands_per_image;
  }
  // Image and row range [y_begin, y_end) of a unit; its table starts at image row y_begin - reach.
  void Band(const Geometry& g, int64_t unit, int64_t* img, int64_t* y_begin, int64_t* y_end) const {
    *img = unit / bands_per_image;
    *y_begin = (unit % bands_per_image) * rows;
    *y_end = std::min<int64_t>(g.h, *y_begin + rows);
  }
  int64_t TableCells(const Geometry& g) const { return (rows + 2 * g.reach) * g.tw; }
};

// Index of the table cell of pixel (y, x) of a band starting at y_begin.
inline int64_t Cell(const Geometry& g, int64_t y_begin, int64_t y, int64_t x) {
  return (y - y_begin + g.reach) * g.tw + x + g.reach;
}

// Fills the table of the band starting at y_begin (table rows y_begin - reach .. y_end + reach): per cell P~,
// (1-P)~ and their logs, with P read from the input or, with from_logits, computed as the softmax of the pixel's
// logits; with `logs` (the forward's stash [N, H, W, 2, C], probabilities only) log P~ and log (1-P)~ are read
// instead of computed. Optionally the per-pixel sum over channels of P~ log P~ + (1-P)~ log (1-P)~ (`entropy`,
// the forward's H(q)) and the unclipped P (`raw`, [cells, Cp]: the backward's clip masks and softmax Jacobian).
// Cells outside the image are zero, and so are the padded channels of every cell.
//
// Per pixel in whole vectors of the padded channels, written straight into the cell (no row staging and copies:
// those were a third of the fill). A pixel's vectors read its C floats and the next pixel's first Cp - C, which
// are masked off; the tensor's last row is copied into a padded buffer first so that nothing is read past its
// end. With from_logits, log P~ = max(x - max - log sum exp, log 1e-4): one log per pixel for the P~ half.
template <int kCp>
void FillTable(const Geometry& g, const float* input, bool from_logits, const float* logs, int64_t img,
               int64_t y_begin, int64_t y_end, float* table, float* entropy, float* raw,
               std::vector<float>* scratch) {
  const int64_t c = g.c, cp = kCp > 0 ? kCp : g.cp, cell_floats = kSlots * cp;
  constexpr int kVecs = kCp > 0 ? kCp / kVecFloats : 1;
  const int num_vecs = kCp > 0 ? kVecs : g.cp / kVecFloats;
  std::vector<VecF> vec_heap(kCp > 0 ? 0 : num_vecs);
  std::vector<VecI> mask_heap(kCp > 0 ? 0 : num_vecs);
  VecF vec_stack[kVecs];
  VecI mask_stack[kVecs];
  VecF* shifted = kCp > 0 ? vec_stack : vec_heap.data();  // the pixel's logits
  // Per pixel of a row (padded to whole vectors with 1s): largest logit, sum of exps, 1 / sum, max + log(sum).
  const int64_t padded_w = (g.w + kVecFloats - 1) / kVecFloats * kVecFloats;
  std::vector<float> row_stats(from_logits ? 4 * padded_w : 0, 1.0f);
  float* row_max = row_stats.data();
  float* row_sum = row_max + padded_w;
  float* row_inverse = row_sum + padded_w;
  float* row_shift = row_inverse + padded_w;
  VecI* lane_ok = kCp > 0 ? mask_stack : mask_heap.data();  // channel lanes (not padding)
  ChannelLanes(c, num_vecs, lane_ok);
  const VecF zero{}, log_low = Splat(LogClipLow()), minus_inf = Splat(-INFINITY);
  for (int64_t y = y_begin - g.reach; y < y_end + g.reach; ++y) {
    const int64_t row_cell = Cell(g, y_begin, y, -g.reach);
    if (y < 0 || y >= g.h) {
      std::fill(table + row_cell * cell_floats, table + (row_cell + g.tw) * cell_floats, 0.0f);
      if (entropy != nullptr) std::fill(entropy + row_cell, entropy + row_cell + g.tw, 0.0f);
      continue;
    }
    for (int64_t side : {int64_t{0}, g.reach + g.w}) {  // the padding columns
      std::fill(table + (row_cell + side) * cell_floats, table + (row_cell + side + g.reach) * cell_floats, 0.0f);
      if (entropy != nullptr) std::fill(entropy + row_cell + side, entropy + row_cell + side + g.reach, 0.0f);
    }
    const float* in = input + g.Pixel(img, y, 0) * c;
    const float* stash = logs != nullptr ? logs + g.Pixel(img, y, 0) * 2 * c : nullptr;
    if (img == g.n - 1 && y == g.h - 1) {  // the last row: read from a copy with Cp floats of padding
      const int64_t row_floats = g.w * c, stash_floats = stash != nullptr ? 2 * row_floats : 0;
      KeepAssigned(scratch, row_floats + stash_floats + 2 * cp, 0.0f);
      std::copy(in, in + row_floats, scratch->data());
      in = scratch->data();
      if (stash != nullptr) {
        std::copy(stash, stash + stash_floats, scratch->data() + row_floats + cp);
        stash = scratch->data() + row_floats + cp;
      }
    }
    if (from_logits) {
      // The softmax's per-pixel reductions first, for the whole row (short independent chains per pixel, where
      // one pass per pixel was one long chain of dependent reductions): the largest logit, the exps (parked in
      // the cell's P~ slot) and their sum; then 1 / sum and log(sum) in vectors over pixels.
      for (int64_t x = 0; x < g.w; ++x) {
        const float* px = in + x * c;
        float* cell = table + (row_cell + g.reach + x) * cell_floats;
        VecF largest = minus_inf;
        for (int i = 0; i < num_vecs; ++i) {
          shifted[i] = lane_ok[i] ? LoadVec(px + i * kVecFloats) : minus_inf;
          largest = Max(largest, shifted[i]);
        }
        const float max_logit = MaxLanes(largest);
        VecF sums = zero;
        for (int i = 0; i < num_vecs; ++i) {
          const VecF e = lane_ok[i] ? ExpVec(shifted[i] - max_logit) : zero;
          StoreVec(cell + kPos * cp + i * kVecFloats, e);
          sums += e;
        }
        row_max[x] = max_logit;
        row_sum[x] = SumLanes(sums);
      }
      for (int64_t x = 0; x < g.w; x += kVecFloats) {  // the arrays are padded to whole vectors with 1s
        const VecF sums = LoadVec(&row_sum[x]);
        StoreVec(&row_inverse[x], 1.0f / sums);  // TensorFlow's softmax multiplies by the inverse, too
        StoreVec(&row_shift[x], LoadVec(&row_max[x]) + LogVec(sums));
      }
    }
    for (int64_t x = 0; x < g.w; ++x) {
      const int64_t cell_index = row_cell + g.reach + x;
      float* cell = table + cell_index * cell_floats;
      const float* px = in + x * c;
      VecF terms = zero;  // P~ log P~ + (1-P)~ log (1-P)~, lane-wise
      auto store = [&](int i, const VecF& p, const VecF& log_pos, const VecF& log_neg) {
        const VecF pos = lane_ok[i] ? ClipVec(p) : zero, neg = lane_ok[i] ? ClipVec(1.0f - p) : zero;
        StoreVec(cell + kPos * cp + i * kVecFloats, pos);
        StoreVec(cell + kNeg * cp + i * kVecFloats, neg);
        StoreVec(cell + kLogPos * cp + i * kVecFloats, log_pos);
        StoreVec(cell + kLogNeg * cp + i * kVecFloats, log_neg);
        if (raw != nullptr) StoreVec(raw + cell_index * cp + i * kVecFloats, p);
        terms += pos * log_pos + neg * log_neg;
      };
      if (from_logits) {  // P = exp(x - max) / sum exp(x - max), log P = x - (max + log sum)
        const VecF inverse_sum = Splat(row_inverse[x]), shift = Splat(row_shift[x]);
        for (int i = 0; i < num_vecs; ++i) {
          const VecF p = LoadVec(cell + kPos * cp + i * kVecFloats) * inverse_sum;
          store(i, p, lane_ok[i] ? Max(LoadVec(px + i * kVecFloats) - shift, log_low) : zero,
                lane_ok[i] ? LogVec(ClipVec(1.0f - p)) : zero);
        }
      } else {
        const float* px_logs = stash != nullptr ? stash + x * 2 * c : nullptr;
        for (int i = 0; i < num_vecs; ++i) {
          const VecF p = lane_ok[i] ? LoadVec(px + i * kVecFloats) : zero;
          if (px_logs != nullptr) {
            store(i, p, lane_ok[i] ? LoadVec(px_logs + i * kVecFloats) : zero,
                  lane_ok[i] ? LoadVec(px_logs + c + i * kVecFloats) : zero);
          } else {
            store(i, p, lane_ok[i] ? LogVec(ClipVec(p)) : zero, lane_ok[i] ? LogVec(ClipVec(1.0f - p)) : zero);
          }
        }
      }
      if (entropy != nullptr) entropy[cell_index] = SumLanes(terms);
    }
  }
}

// Copies the logs of the band's rows [y_begin, y_end) from its table into the stash.
void StashLogs(const Geometry& g, const float* table, int64_t img, int64_t y_begin, int64_t y_end, float* logs) {
  const int64_t c = g.c, cp = g.cp;
  for (int64_t y = y_begin; y < y_end; ++y) {
    for (int64_t x = 0; x < g.w; ++x) {
      const float* t = table + Cell(g, y_begin, y, x) * kSlots * cp;
      float* out = logs + g.Pixel(img, y, x) * 2 * c;
      std::copy(t + kLogPos * cp, t + kLogPos * cp + c, out);
      std::copy(t + kLogNeg * cp, t + kLogNeg * cp + c, out + c);
    }
  }
}

// Edge bits of sizes s0 .. min(s0 + 8, S) - 1 at x as one mask, bit (s - s0) * 8 + k.
inline uint64_t EdgeMask(const int32_t* edge_bits, int64_t w, int64_t x, int64_t s0, int64_t num_sizes) {
  uint64_t mask = 0;
  const int64_t s1 = std::min<int64_t>(num_sizes, s0 + 8);
  for (int64_t s = s0; s < s1; ++s) mask |= static_cast<uint64_t>(static_cast<uint32_t>(edge_bits[s * w + x]) & 0xffu) << (8 * (s - s0));
  return mask;
}

// KL of channel k of the pair (centre t_p, neighbour t_q).
inline float ChannelKl(const float* tp, const float* tq, int64_t cp, int64_t k) {
  return tq[kPos * cp + k] * (tq[kLogPos * cp + k] - tp[kLogPos * cp + k]) +
         tq[kNeg * cp + k] * (tq[kLogNeg * cp + k] - tp[kLogNeg * cp + k]);
}

// Per-row pair flags of the forward, vectorised over the row (contiguous label reads): for size s, neighbour k
// and centre x, weight[(s * 8 + k) * W + x] = 1 if the pair is valid (centre, neighbour and, for the
// bidirectional ignore, the opposite pixel labelled) else 0; bit k of edge_bits[s * W + x] = valid and labels
// differ. Adds the row's pair counts to edge_count / not_edge_count [S].
void ForwardRowFlags(const Geometry& g, int64_t img, int64_t y, float* weight, int32_t* edge_bits,
                     int64_t* edge_count, int64_t* not_edge_count) {
  const int32_t* lab = &g.label_map[g.LabelIndex(img, y, 0)];
  const int64_t num_sizes = g.sizes.size();
  std::fill(edge_bits, edge_bits + num_sizes * g.w, 0);
  for (int64_t s = 0; s < num_sizes; ++s) {
    int64_t valid_pairs = 0, edge_pairs = 0;
    for (int k = 0; k < 8; ++k) {
      const int64_t d = g.label_offset[s * 8 + k];
      float* wk = weight + (s * 8 + k) * g.w;
      int32_t* bits = edge_bits + s * g.w;
#pragma omp simd reduction(+ : valid_pairs, edge_pairs)
      for (int64_t x = 0; x < g.w; ++x) {
        const int32_t a = lab[x], b = lab[x + d];
        const int32_t valid = (a >= 0) & (b >= 0) & (lab[x - d] >= 0);
        const int32_t edge = valid & (a != b);
        wk[x] = static_cast<float>(valid);
        bits[x] |= edge << k;
        valid_pairs += valid;
        edge_pairs += edge;
      }
    }
    edge_count[s] += 2 * edge_pairs;
    not_edge_count[s] += g.c * valid_pairs - 2 * edge_pairs;
  }
}

// Forward over rows [y_begin, y_end) of image img: per-class edge / non-edge sums [C * S] each and counts [S]
// each.
//
// The KL of a pair summed over channels splits into a neighbour-only and a mixed part,
//   sum_c KL(p, q, c) = H(q) - <V(q), L(p)>,  V = [P~, (1-P)~], L = [log P~, log (1-P)~] (2 Cp floats each),
// H(q) = <V(q), L(q)> precomputed per pixel, so for a centre and size the pairs add w V(q) (w = 1 for a valid
// pair, 0 otherwise: no branch, one FMA per 16 floats) and w H(q), and the centre takes ONE dot product with its
// L(p). The edge channels' KL is computed per edge pair (the set bits of the row flags) and taken out of the
// total again.
// kCp > 0 fixes the padded channel count at compile time (whole unrolled vectors, accumulators in registers);
// kCp == 0 reads it from the geometry.
template <int kCp>
void ForwardRows(const Geometry& g, const float* table, const float* entropy, float margin, int64_t img,
                 int64_t y_begin, int64_t y_end, float* weight, int32_t* edge_bits, double* edge_sum,
                 double* not_edge_sum, int64_t* edge_count, int64_t* not_edge_count) {
  const int64_t cp = kCp > 0 ? kCp : g.cp, cell_floats = kSlots * cp;
  constexpr int kVecs = kCp > 0 ? 2 * kCp / kVecFloats : 1;
  const int num_vecs = kCp > 0 ? kVecs : 2 * g.cp / kVecFloats;
  const int64_t num_sizes = g.sizes.size();
  std::vector<VecF> v_heap(kCp > 0 ? 0 : num_vecs);
  VecF v_stack[kVecs];
  VecF* v_sum = kCp > 0 ? v_stack : v_heap.data();
  // Per size of the current centre: sum_q w H(q) - <sum_q w V(q), L(p)> (lane-wise until the end), the edge
  // hinges and the edge channels' KL.
  std::vector<VecF> dots(num_sizes);
  std::vector<float> per_size(3 * num_sizes);
  float* h_sums = per_size.data();
  float* edge_acc = h_sums + num_sizes;
  float* edge_channels_kl = edge_acc + num_sizes;
  for (int64_t y = y_begin; y < y_end; ++y) {
    ForwardRowFlags(g, img, y, weight, edge_bits, edge_count, not_edge_count);
    const int32_t* lab = &g.label_map[g.LabelIndex(img, y, 0)];
    for (int64_t x = 0; x < g.w; ++x) {
      const int a = lab[x];
      if (a < 0) continue;
      const int64_t centre_cell = Cell(g, y_begin, y, x);
      const float* tp = table + centre_cell * cell_floats;
      const float* log_p = tp + kLogPos * cp;  // [log P~, log (1-P)~] of the centre, 2 Cp floats
      for (int64_t s = 0; s < num_sizes; ++s) {
        for (int i = 0; i < num_vecs; ++i) v_sum[i] = VecF{};
        // Float within a centre and size (at most 8 pairs); the class sums accumulate in double.
        float h_sum = 0.0f;
        for (int k = 0; k < 8; ++k) {
          const float wk = weight[(s * 8 + k) * g.w + x];
          const int64_t cell = centre_cell + g.cell_offset[s * 8 + k];
          const float* tq = table + cell * cell_floats;
          for (int i = 0; i < num_vecs; ++i) v_sum[i] += wk * LoadVec(tq + i * kVecFloats);
          h_sum += wk * entropy[cell];
        }
        VecF dot{};
        for (int i = 0; i < num_vecs; ++i) dot += v_sum[i] * LoadVec(log_p + i * kVecFloats);
        dots[s] = dot;
        h_sums[s] = h_sum;
        edge_acc[s] = 0.0f;
        edge_channels_kl[s] = 0.0f;
      }
      // The edge pairs of all sizes in one loop (bit s * 8 + k; 8 sizes per mask): one unpredictable loop exit per
      // centre instead of one per size.
      for (int64_t s0 = 0; s0 < num_sizes; s0 += 8) {
        for (uint64_t bits = EdgeMask(edge_bits, g.w, x, s0, num_sizes); bits != 0; bits &= bits - 1) {
          const int64_t sk = s0 * 8 + __builtin_ctzll(bits), s = sk / 8;
          const float* tq = table + (centre_cell + g.cell_offset[sk]) * cell_floats;
          const float kl_a = ChannelKl(tp, tq, cp, a), kl_b = ChannelKl(tp, tq, cp, lab[x + g.label_offset[sk]]);
          edge_acc[s] += std::max(0.0f, margin - kl_a) + std::max(0.0f, margin - kl_b);
          edge_channels_kl[s] += kl_a + kl_b;
        }
      }
      for (int64_t s = 0; s < num_sizes; ++s) {
        edge_sum[a * num_sizes + s] += edge_acc[s];
        not_edge_sum[a * num_sizes + s] += h_sums[s] - SumLanes(dots[s]) - edge_channels_kl[s];
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

// Per-row pair weights of the backward, vectorised over the row: for size s, neighbour k and pixel z = x, the
// pair (z, q = z+d) in its two roles, z the centre (needs z, q, z-d labelled; weight g_centre = d loss / d
// non-edge sum of z's class) and z the neighbour of centre q at offset -d (needs z, q, q+d labelled; weight
// g_neighbour = that of q's class), at [(s * 8 + k) * W + x]. edge_bits[s * W + x], for labels that differ: bit
// k = some role valid, bit 8 + k = the centre role valid, bit 16 + k = the neighbour role valid (the edge loop
// reads the hinge weights of those roles itself: edges are a minority of the pairs).
void BackwardRowFlags(const Geometry& g, const float* pixel_grads, int64_t img, int64_t y, float* g_centre,
                      float* g_neighbour, int32_t* edge_bits) {
  const int32_t* lab = &g.label_map[g.LabelIndex(img, y, 0)];
  const int64_t num_sizes = g.sizes.size();
  std::fill(edge_bits, edge_bits + num_sizes * g.w, 0);
  for (int64_t s = 0; s < num_sizes; ++s) {
    // The label map's pixels' gradient weights (0 where ignored): contiguous loads at x and x + d, no gathers.
    const int64_t plane = g.n * g.ph * g.pw;
    const float* not_edge_grad = pixel_grads + (num_sizes + s) * plane + g.LabelIndex(img, y, 0);
    for (int k = 0; k < 8; ++k) {
      const int64_t d = g.label_offset[s * 8 + k];
      float* gc = g_centre + (s * 8 + k) * g.w;
      float* gn = g_neighbour + (s * 8 + k) * g.w;
      int32_t* bits = edge_bits + s * g.w;
#pragma omp simd
      for (int64_t x = 0; x < g.w; ++x) {
        const int32_t a = lab[x], b = lab[x + d];
        const int32_t pair = (a >= 0) & (b >= 0);
        const int32_t as_centre = pair & (lab[x - d] >= 0), as_neighbour = pair & (lab[x + 2 * d] >= 0);
        const int32_t differ = a != b;
        gc[x] = as_centre ? not_edge_grad[x] : 0.0f;
        gn[x] = as_neighbour ? not_edge_grad[x + d] : 0.0f;
        bits[x] |= ((((as_centre | as_neighbour) & differ)) << k) | ((as_centre & differ) << (8 + k)) |
                   ((as_neighbour & differ) << (16 + k));
      }
    }
  }
}

// Backward over rows [y_begin, y_end) of image img: writes d loss / d probs (with from_logits d loss / d logits)
// of every pixel of those rows.
//
// Pixel z as the centre of pair (z, q = z+d) (non-edge weight g_c = grad of its class's non-edge sum):
// d KL / d P~(z) = -P~(q) / P~(z), so the pairs add g_c V(q) and z divides once at the end. As the neighbour of
// centre q (offset -d, weight g_n of q's class): d KL / d P~(z) = 1 + log P~(z) - log P~(q), so the pairs add
// g_n and g_n L(q), and z multiplies sum g_n by 1 + L(z) once at the end. Per pair that is two FMAs per 16
// floats, with the weights of the row flags (0 for an absent role: no branch). Edge channels a, b of a pair with
// a != b: the hinge replaces the non-edge weight, added as scalar corrections of those two channels. The final
// combine (clip masks, the two halves' difference, the softmax's Jacobian P (g - <g, P>)) is in whole vectors.
template <int kCp>
void BackwardRows(const Geometry& g, const float* table, const float* raw, const float* pixel_grads, float margin,
                  int64_t img, int64_t y_begin, int64_t y_end, float* g_centre, float* g_neighbour,
                  int32_t* edge_bits, bool from_logits, float* grad) {
  const int64_t cp = kCp > 0 ? kCp : g.cp, cell_floats = kSlots * cp;
  const int64_t cp2 = 2 * cp;
  constexpr int kVecs = kCp > 0 ? 2 * kCp / kVecFloats : 1;
  const int num_vecs = kCp > 0 ? kVecs : 2 * g.cp / kVecFloats;
  const int half_vecs = num_vecs / 2;  // vectors of one half ([P~ part] or [(1-P)~ part])
  const int64_t c = g.c, num_sizes = g.sizes.size();
  const int64_t plane = g.n * g.ph * g.pw;
  // Vector accumulators: local arrays when the channel count is static, so that they stay in registers. The edge
  // corrections (indexed by a runtime channel) live in a separate array, so that they do not force the
  // accumulators to memory.
  std::vector<VecF> acc_heap(kCp > 0 ? 0 : 2 * num_vecs);
  std::vector<VecI> mask_heap(kCp > 0 ? 0 : half_vecs);
  VecF acc_stack[2 * kVecs];
  VecI mask_stack[kVecs];
  VecF* centre_v = kCp > 0 ? acc_stack : acc_heap.data();  // sum g_c V(q)  [P~ part, (1-P)~ part]
  VecF* neighbour_log = centre_v + num_vecs;                  // sum g_n L(q)
  VecI* lane_ok = kCp > 0 ? mask_stack : mask_heap.data();    // channel lanes of a half (not padding)
  ChannelLanes(c, half_vecs, lane_ok);
  std::vector<float> sums_heap(kCp > 0 ? 0 : 2 * cp2);
  alignas(64) float sums_stack[kCp > 0 ? 4 * kCp : 1];
  float* sums = kCp > 0 ? sums_stack : sums_heap.data();
  float* centre_fix = sums;           // edge-channel corrections of centre_v
  float* neighbour_fix = sums + cp2;  // edge-channel corrections of the neighbour part (final values)
  std::vector<VecF> g_heap(kCp > 0 ? 0 : half_vecs);
  VecF g_stack[kVecs];
  VecF* g_p = kCp > 0 ? g_stack : g_heap.data();  // d / d P (d / d logits) of the pixel, by vector
  const VecF one = Splat(1.0f), zero{}, low = Splat(kClipLow), high = Splat(kClipHigh);
  for (int64_t y = y_begin; y < y_end; ++y) {
    BackwardRowFlags(g, pixel_grads, img, y, g_centre, g_neighbour, edge_bits);
    const int32_t* lab = &g.label_map[g.LabelIndex(img, y, 0)];
    for (int64_t x = 0; x < g.w; ++x) {
      float* out = grad + g.Pixel(img, y, x) * c;
      const int a = lab[x];
      if (a < 0) {  // every pair of z needs z labelled
        std::fill(out, out + c, 0.0f);
        continue;
      }
      for (int i = 0; i < 2 * num_vecs; ++i) centre_v[i] = VecF{};
      float neighbour_weight = 0.0f;  // sum g_n
      const int64_t z_cell = Cell(g, y_begin, y, x);
      const float* tz = table + z_cell * cell_floats;
      for (int64_t sk = 0; sk < 8 * num_sizes; ++sk) {
        const float gc = g_centre[sk * g.w + x], gn = g_neighbour[sk * g.w + x];
        const float* tq = table + (z_cell + g.cell_offset[sk]) * cell_floats;
        for (int i = 0; i < num_vecs; ++i) {
          centre_v[i] += gc * LoadVec(tq + i * kVecFloats);
          neighbour_log[i] += gn * LoadVec(tq + cp2 + i * kVecFloats);
        }
        neighbour_weight += gn;
      }
      for (int i = 0; i < 2 * num_vecs; ++i) StoreVec(centre_fix + i * kVecFloats, zero);  // and neighbour_fix
      const float z_a[4] = {tz[kPos * cp + a], tz[kNeg * cp + a], tz[kLogPos * cp + a], tz[kLogNeg * cp + a]};
      EdgeFix fix_a;  // channel a (z's own class) accumulates in registers, channel b in the arrays
      const int64_t z_label = g.LabelIndex(img, y, x);
      // The edge pairs of all sizes in one loop (bit s * 8 + k of a 64-bit mask; 8 sizes per mask): one
      // unpredictable loop exit per pixel instead of one per size.
      for (int64_t s0 = 0; s0 < num_sizes; s0 += 8) {
        for (uint64_t bits = EdgeMask(edge_bits, g.w, x, s0, num_sizes); bits != 0; bits &= bits - 1) {
          const int64_t sk = s0 * 8 + __builtin_ctzll(bits);
          const int64_t s = sk / 8, k = sk % 8;
          const int64_t d = g.label_offset[sk];
          const float* tq = table + (z_cell + g.cell_offset[sk]) * cell_floats;
          const int b = lab[x + d];
          const float gc = g_centre[sk * g.w + x], gn = g_neighbour[sk * g.w + x];
          // -d loss / d edge sum of z's class (centre role) and of q's class (neighbour role), 0 for an absent
          // role.
          const int32_t roles = edge_bits[s * g.w + x];
          const float* edge_grad = pixel_grads + s * plane + z_label;
          const float hinge_centre = (roles >> (8 + k)) & 1 ? -edge_grad[0] : 0.0f;
          const float hinge_neighbour = (roles >> (16 + k)) & 1 ? -edge_grad[d] : 0.0f;
          EdgeChannelFix(z_a, tq, cp, a, margin, hinge_centre, gc, hinge_neighbour, gn, &fix_a);
          const float z_b[4] = {tz[kPos * cp + b], tz[kNeg * cp + b], tz[kLogPos * cp + b], tz[kLogNeg * cp + b]};
          EdgeFix fix_b;
          EdgeChannelFix(z_b, tq, cp, b, margin, hinge_centre, gc, hinge_neighbour, gn, &fix_b);
          centre_fix[b] += fix_b.centre_pos;
          centre_fix[cp + b] += fix_b.centre_neg;
          neighbour_fix[b] += fix_b.neighbour_pos;
          neighbour_fix[cp + b] += fix_b.neighbour_neg;
        }
      }
      centre_fix[a] += fix_a.centre_pos;
      centre_fix[cp + a] += fix_a.centre_neg;
      neighbour_fix[a] += fix_a.neighbour_pos;
      neighbour_fix[cp + a] += fix_a.neighbour_neg;
      // d / d P~ and d / d (1-P)~ of each half where its clip passes the gradient, their difference per channel
      // (d (1-P)~ / dP = -1), and with from_logits the softmax's Jacobian; padded lanes are 0.
      const VecF neighbour_w = Splat(neighbour_weight);
      const float* pz = raw + z_cell * cp;  // unclipped P of z, padded with 0
      VecF dot = zero;
      for (int i = 0; i < half_vecs; ++i) {
        const VecF p = LoadVec(pz + i * kVecFloats), q = one - p;
        VecF half[2];
        for (int part = 0; part < 2; ++part) {
          const int j = part * half_vecs + i;
          const VecF r = part == 0 ? p : q;
          const VecF neighbour = neighbour_w * (one + LoadVec(tz + cp2 + j * kVecFloats)) - neighbour_log[j] +
                                 LoadVec(neighbour_fix + j * kVecFloats);
          const VecF centre = centre_v[j] + LoadVec(centre_fix + j * kVecFloats);
          half[part] = ((r >= low) & (r <= high)) ? neighbour - centre / LoadVec(tz + j * kVecFloats) : zero;
        }
        g_p[i] = lane_ok[i] ? half[0] - half[1] : zero;
        dot += g_p[i] * p;
      }
      if (from_logits) {  // probs = softmax(logits): d/d logits = P (g - <g, P>), g = d/d P
        const VecF dot_all = Splat(SumLanes(dot));
        for (int i = 0; i < half_vecs; ++i) g_p[i] = LoadVec(pz + i * kVecFloats) * (g_p[i] - dot_all);
      }
      for (int i = 0; i < half_vecs; ++i) {
        StoreLanes(out + i * kVecFloats, g_p[i], std::min<int64_t>(kVecFloats, c - i * kVecFloats));
      }
    }
  }
}

// Per-thread work buffers (band table, entropy, unclipped probabilities, row flags, staging of the tensor's last
// row), kept between calls: allocated per shard and call, the ~1 MB table cost page faults on every call wherever
// the allocator returns freed memory to the system (as the benchmark's MALLOC_MMAP_THRESHOLD_ makes it). Every
// cell, padded channels included, is written by the fill, so nothing needs zeroing here.
struct ThreadBuffers {
  std::vector<float> table, entropy, raw, weight, weight2, row;
  std::vector<int32_t> edge_bits;

  void Prepare(const Geometry& g, const Tiling& tiling) {
    KeepSized(&table, tiling.TableCells(g) * g.CellFloats());
    KeepSized(&entropy, tiling.TableCells(g));
    KeepSized(&raw, tiling.TableCells(g) * g.cp);
    KeepSized(&weight, g.sizes.size() * 8 * g.w);   // the forward's pair weights; the backward's g_centre
    KeepSized(&weight2, g.sizes.size() * 8 * g.w);  // the backward's g_neighbour
    KeepSized(&edge_bits, g.sizes.size() * g.w);
  }
};

ThreadBuffers& ThisThreadBuffers() {
  thread_local ThreadBuffers buffers;
  return buffers;
}

// Runs fn(begin, end) over [0, units) on TensorFlow's CPU thread pool (adaptive shards: measured against one
// fixed shard per thread, which was ~10% slower on the shared 2-core machine).
template <typename Fn>
void ParallelUnits(OpKernelContext* ctx, int64_t units, int64_t cost_per_unit, const Fn& fn) {
  if (units <= 0) return;
  ctx->device()->tensorflow_cpu_worker_threads()->workers->ParallelFor(units, cost_per_unit, fn);
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

// The attributes both kernels share.
class AffinityFieldOpBase : public OpKernel {
 public:
  explicit AffinityFieldOpBase(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("sizes", &sizes_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("kld_margin", &margin_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("from_logits", &from_logits_));
    for (int s : sizes_) OP_REQUIRES(ctx, s >= 1, InvalidArgument("affinity_field: sizes must be >= 1"));
  }

 protected:
  std::vector<int> sizes_;
  float margin_ = 0.0f;
  bool from_logits_ = false;  // input 1 holds logits: the kernels take their softmax (and its gradient)
  // Buffers of a call kept for the next (where freed memory goes back to the system, as under the benchmark's
  // MALLOC_MMAP_THRESHOLD_, fresh ones page-fault on every call); calls of one op instance take turns.
  std::mutex buffers_mu_;
  std::vector<int32_t> label_buffer_;  // the padded label map
  std::vector<float> planes_buffer_;   // the backward's per-pixel gradient planes
};

class AffinityFieldSumsOp : public AffinityFieldOpBase {
 public:
  explicit AffinityFieldSumsOp(OpKernelConstruction* ctx) : AffinityFieldOpBase(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("stash_logs", &stash_logs_));
    OP_REQUIRES(ctx, !(stash_logs_ && from_logits_),
                InvalidArgument("affinity_field: stash_logs needs probabilities, not from_logits"));
  }

  void Compute(OpKernelContext* ctx) override {
    Geometry g;
    std::lock_guard<std::mutex> lock(buffers_mu_);
    OP_REQUIRES_OK(ctx, Prepare(ctx, sizes_, &label_buffer_, &g));
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
    auto work = [&](int64_t block_begin, int64_t block_end) {
      ThreadBuffers& buffers = ThisThreadBuffers();
      buffers.Prepare(g, tiling);
      std::vector<float>& table = buffers.table;
      std::vector<float>& entropy = buffers.entropy;
      std::vector<float>& weight = buffers.weight;
      std::vector<int32_t>& edge_bits = buffers.edge_bits;
      std::vector<float>& scratch = buffers.row;
      for (int64_t block = block_begin; block < block_end; ++block) {
        double* edge_sum = &sums[block * 2 * g.c * num_sizes];
        int64_t* edge_count = &counts[block * 2 * num_sizes];
        int64_t img, y_begin, y_end;
        tiling.Band(g, block, &img, &y_begin, &y_end);
        DispatchChannels(g.cp, [&](auto cp_constant) {
          FillTable<decltype(cp_constant)::value>(g, probs, from_logits_, nullptr, img, y_begin, y_end,
                                                  table.data(), entropy.data(), nullptr, &scratch);
          ForwardRows<decltype(cp_constant)::value>(g, table.data(), entropy.data(), margin_, img, y_begin, y_end,
                                                    weight.data(), edge_bits.data(), edge_sum,
                                                    edge_sum + g.c * num_sizes, edge_count,
                                                    edge_count + num_sizes);
        });
        if (logs != nullptr) StashLogs(g, table.data(), img, y_begin, y_end, logs);
      }
    };
    ParallelUnits(ctx, blocks, tiling.rows * g.w * 24 * g.cp * 20, work);

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
  explicit AffinityFieldSumsGradOp(OpKernelConstruction* ctx) : AffinityFieldOpBase(ctx) {}

  void Compute(OpKernelContext* ctx) override {
    Geometry g;
    std::lock_guard<std::mutex> lock(buffers_mu_);
    OP_REQUIRES_OK(ctx, Prepare(ctx, sizes_, &label_buffer_, &g));
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
    OP_REQUIRES(ctx, !(have_logs && from_logits_),
                InvalidArgument("affinity_field_grad: logs are stashed for probabilities, not from_logits"));
    const float* logs = have_logs ? logs_t.flat<float>().data() : nullptr;
    const float* probs = ctx->input(1).flat<float>().data();  // or logits
    const float* grad_sums = grad_sums_t.flat<float>().data();  // [C, 2S]: edge columns, then non-edge
    float* grad = grad_t->flat<float>().data();
    // Per column j of grad_sums and label-map pixel: grad_sums[class, j] (0 where ignored), [2S, N, PH, PW], so
    // that the row flags read the weights of a row and of its shifted rows contiguously.
    const int64_t plane = g.n * g.ph * g.pw;
    std::vector<float>& pixel_grads = planes_buffer_;
    KeepSized(&pixel_grads, 2 * num_sizes * plane);
    const int64_t image_pixels = g.ph * g.pw;
    auto fill_planes = [&](int64_t img_begin, int64_t img_end) {
      for (int64_t i = img_begin * image_pixels; i < img_end * image_pixels; ++i) {
        const int32_t cls = g.label_map[i];
        const float* column = grad_sums + std::max(cls, 0) * 2 * num_sizes;
        for (int64_t j = 0; j < 2 * num_sizes; ++j) pixel_grads[j * plane + i] = cls >= 0 ? column[j] : 0.0f;
      }
    };
    ParallelUnits(ctx, g.n, image_pixels * 2 * num_sizes * 4, fill_planes);
    const Tiling tiling(ctx, g);
    auto work = [&](int64_t unit_begin, int64_t unit_end) {
      ThreadBuffers& buffers = ThisThreadBuffers();
      buffers.Prepare(g, tiling);
      std::vector<float>& table = buffers.table;
      std::vector<float>& g_centre = buffers.weight;
      std::vector<float>& g_neighbour = buffers.weight2;
      std::vector<int32_t>& edge_bits = buffers.edge_bits;
      std::vector<float>& scratch = buffers.row;
      for (int64_t unit = unit_begin; unit < unit_end; ++unit) {
        int64_t img, y_begin, y_end;
        tiling.Band(g, unit, &img, &y_begin, &y_end);
        DispatchChannels(g.cp, [&](auto cp_constant) {
          constexpr int kCp = decltype(cp_constant)::value;
          FillTable<kCp>(g, probs, from_logits_, logs, img, y_begin, y_end, table.data(), nullptr,
                         buffers.raw.data(), &scratch);
          BackwardRows<kCp>(g, table.data(), buffers.raw.data(), pixel_grads.data(), margin_, img, y_begin, y_end,
                            g_centre.data(), g_neighbour.data(), edge_bits.data(), from_logits_, grad);
        });
      }
    };
    ParallelUnits(ctx, tiling.units, tiling.rows * g.w * 24 * g.cp * 30, work);
  }
};

}  // namespace

REGISTER_OP("AffinityFieldSums")
    .Input("labels: int32")
    .Input("probs: float")
    .Attr("sizes: list(int) >= 1")
    .Attr("kld_margin: float")
    .Attr("stash_logs: bool = false")
    .Attr("from_logits: bool = false")
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
probs: [N, H, W, C] probabilities or, with from_logits, logits (the op takes their softmax).
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
    .Attr("from_logits: bool = false")
    .Output("grad_probs: float")
    .SetShapeFn([](tensorflow::shape_inference::InferenceContext* c) {
      c->set_output(0, c->input(1));
      return absl::OkStatus();
    });

REGISTER_OP("AffinityFieldCachedBytes")
    .Output("bytes: int64")
    .SetIsStateful()
    .SetShapeFn([](tensorflow::shape_inference::InferenceContext* c) {
      c->set_output(0, c->Scalar());
      return absl::OkStatus();
    })
    .Doc(R"doc(
Bytes the affinity-field kernels of this process keep allocated between calls (buffers reused by later calls).
)doc");

class AffinityFieldCachedBytesOp : public OpKernel {
 public:
  explicit AffinityFieldCachedBytesOp(OpKernelConstruction* ctx) : OpKernel(ctx) {}
  void Compute(OpKernelContext* ctx) override {
    Tensor* out = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, TensorShape({}), &out));
    out->scalar<int64_t>()() = cached_bytes.load();
  }
};

REGISTER_KERNEL_BUILDER(Name("AffinityFieldSums").Device(DEVICE_CPU), AffinityFieldSumsOp);
REGISTER_KERNEL_BUILDER(Name("AffinityFieldCachedBytes").Device(DEVICE_CPU), AffinityFieldCachedBytesOp);
REGISTER_KERNEL_BUILDER(Name("AffinityFieldSumsGrad").Device(DEVICE_CPU), AffinityFieldSumsGradOp);
