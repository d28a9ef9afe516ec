// CPU kernels of the supervised SegSort loss: the NCA vMF likelihood with its gradient (op SegsortNcaLoss) and the
// batched vMF k-means of the images of a batch (op SegsortBatchKmeans).
//
// Built on first use by segsort/kernel.py (common/ops/kernel_build.py: g++, tf.sysconfig flags). The maths is that
// of segsort.losses.vmf_nca_loss and segsort.clustering.batch_kmeans_with_initial_labels (their docstrings); those
// TensorFlow paths are the test oracles.
//
// SegsortNcaLoss. The prototypes of the batch's segments are the normalised sums of their pixels (rows with
// segment id -1 are ignored, so the op takes the whole grid of a batch). For pixel i (unit row e_i, class c_i, own
// segment s_i) and every prototype j (the batch's segments, then the memory), S_ij = exp(kappa e_i . mu_j); same_i / different_i = sums over j of the pixel's
// class / of the other classes; numerator = same - S_{i,s_i} if that is > 0 else S_{i,s_i};
// loss = mean_i log((numerator + different) / numerator). The pixels are processed in blocks of kBlock rows: the
// block's [kBlock, J] similarities are computed by a register-blocked product with the exp (a branch-free Cephes
// polynomial) applied on the fly, into a tile that stays in cache; the per-pixel sums come from the tile, which is
// then turned in place into the loss's derivative w.r.t. the logits, W_ij = kappa/N S_ij (1/den_i - [c_j == c_i]
// / num_i) (0 for the own segment when other same-class segments exist: it is in neither sum). From W the block
// adds its part of d loss / d e = W mu and d loss / d mu = W^T e; d loss / d mu then goes through the normalisation
// and the segment sums to the pixels. So the gradients are computed by the forward (the op is meant for training);
// no [N, J] matrix is ever allocated.
// Determinism: the blocks are grouped into fixed chunks (independent of the thread count), each with its own
// prototype-gradient accumulator and loss sum (double), reduced in chunk order.
//
// SegsortBatchKmeans: per image (images in parallel) `iterations` M/E steps: M = sums of the valid pixels per
// cluster, normalised (an empty cluster gets a zero prototype and a -inf bias, so it never wins); E = first
// arg-max over the clusters of the dot products, computed with the pixels along the vector lanes. An image whose
// labels did not change in an E-step has reached the fixed point and stops (same result, fewer iterations).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

#ifdef __AVX512F__
#include <immintrin.h>
#endif

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

// 16 floats: one AVX-512 register, two AVX2 registers (GCC splits the vector types as the target allows).
constexpr int kLanes = 16;
typedef float Vec __attribute__((vector_size(64)));
typedef float VecU __attribute__((vector_size(64), aligned(4)));
typedef int32_t IVec __attribute__((vector_size(64)));
typedef int32_t IVecU __attribute__((vector_size(64), aligned(4)));

inline Vec Load(const float* p) { return *reinterpret_cast<const VecU*>(p); }
inline IVec LoadI(const int32_t* p) { return *reinterpret_cast<const IVecU*>(p); }
inline void Store(float* p, Vec v) { *reinterpret_cast<VecU*>(p) = v; }
// Spelled-out broadcasts: `Vec{} + x` would be a real addition (0 + -0 is not -0), not a broadcast.
inline Vec Splat(float x) { return Vec{x, x, x, x, x, x, x, x, x, x, x, x, x, x, x, x}; }
inline IVec SplatI(int32_t x) { return IVec{x, x, x, x, x, x, x, x, x, x, x, x, x, x, x, x}; }
inline Vec Select(IVec mask, Vec a, Vec b) { return mask ? a : b; }

inline double HorizontalSum(Vec v) {
  double s = 0;
  for (int l = 0; l < kLanes; ++l) s += v[l];
  return s;
}

inline int64_t RoundUp(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

// Calls fn(std::integral_constant<int, V>{}) for the number of 16-float vectors V (1..8) of a feature row, so that
// the register tiles have a compile-time width.
template <typename Fn>
void DispatchVectors(int64_t vectors, Fn&& fn) {
  switch (vectors) {
    case 1: fn(std::integral_constant<int, 1>{}); break;
    case 2: fn(std::integral_constant<int, 2>{}); break;
    case 3: fn(std::integral_constant<int, 3>{}); break;
    case 4: fn(std::integral_constant<int, 4>{}); break;
    case 5: fn(std::integral_constant<int, 5>{}); break;
    case 6: fn(std::integral_constant<int, 6>{}); break;
    case 7: fn(std::integral_constant<int, 7>{}); break;
    default: fn(std::integral_constant<int, 8>{}); break;
  }
}

// exp(x): Cephes' expf polynomial after the reduction x = n ln2 + r (|r| <= ln2 / 2), ~1 ulp; NaN stays NaN.
#ifdef __AVX512F__
// AVX-512: round and scale by 2^n with vrndscaleps / vscalefps (which also give inf above ~88.7 and 0 far below
// -87.3), 14 instructions.
inline Vec Exp(Vec xv) {
  __m512 x = _mm512_max_ps(_mm512_set1_ps(-104.0f), reinterpret_cast<__m512>(xv));  // max(c, NaN) = NaN
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 y = _mm512_set1_ps(1.9875691500e-4f);
  y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(1.3981999507e-3f));
  y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(8.3334519073e-3f));
  y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(4.1665795894e-2f));
  y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(1.6666665459e-1f));
  y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(5.0000001201e-1f));
  y = _mm512_add_ps(_mm512_fmadd_ps(y, _mm512_mul_ps(r, r), r), _mm512_set1_ps(1.0f));
  return reinterpret_cast<Vec>(_mm512_scalef_ps(y, n));
}
#else
// Portable vector code: 0 below -87.3 (where float underflows), clamped at 88.37 (float overflow).
inline Vec Exp(Vec x) {
  const IVec underflow = x < Splat(-87.3365447504f);
  x = Select(x > Splat(88.3762626647949f), Splat(88.3762626647949f), x);  // NaN stays NaN
  x = Select(underflow, Splat(0.0f), x);
  // n = round(x / ln2) with the 1.5 * 2^23 trick (exact for |n| < 2^22).
  const Vec shifted = x * Splat(1.44269504088896341f) + Splat(12582912.0f);
  const Vec n = shifted - Splat(12582912.0f);
  Vec r = x - n * Splat(0.693359375f);
  r = r - n * Splat(-2.12194440e-4f);
  Vec y = Splat(1.9875691500e-4f);
  y = y * r + Splat(1.3981999507e-3f);
  y = y * r + Splat(8.3334519073e-3f);
  y = y * r + Splat(4.1665795894e-2f);
  y = y * r + Splat(1.6666665459e-1f);
  y = y * r + Splat(5.0000001201e-1f);
  y = y * r * r + r + Splat(1.0f);
  const IVec bits = (__builtin_convertvector(n, IVec) + 127) << 23;
  Vec scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return Select(underflow, Splat(0.0f), y * scale);
}
#endif

// ------------------------------------------------------------------------------------------------ NCA likelihood
constexpr int64_t kBlock = 32;        // pixel rows per tile
constexpr int64_t kChunkBlocks = 8;   // blocks per deterministic accumulation chunk
constexpr int kRows = 8;              // pixel rows (or prototypes) of the register tiles
constexpr int64_t kColumns = 2 * kLanes;  // prototype columns of the logits' register tile

struct NcaProblem {
  int64_t n = 0, s = 0, m = 0, j = 0, jp = 0, d = 0, dp = 0;  // n = counted pixels (segment id >= 0)
  float kappa = 0;
  const float* embedding = nullptr;     // [n, dp] the counted pixels, zero padded
  const int64_t* row_index = nullptr;   // [n] their rows in the input
  const int32_t* segment = nullptr;     // [n]
  const int32_t* pixel_class = nullptr; // [n]
  std::vector<float> transposed;  // [d, jp] prototypes column-major, zero padded
  std::vector<float> rows;        // [j, dp] prototypes row-major, zero padded
  std::vector<float> column_bias; // [jp] 0, or -inf on padded columns
  std::vector<int32_t> column_class;  // [jp] compact class, INT32_MIN on padded columns
};

// Similarities of rows [0, rows) of the block starting at pixel `first` into tile [kBlock, jp]; `scaled` is a
// [kBlock, d] buffer for kappa * e (kappa on the embedding side, as the TF path).
void BlockSimilarities(const NcaProblem& p, int64_t first, int64_t rows, float* scaled, float* tile) {
  const int64_t d = p.d, jp = p.jp;
  for (int64_t r = 0; r < RoundUp(rows, kRows); ++r) {
    const float* e = p.embedding + std::min(first + r, p.n - 1) * p.dp;
    for (int64_t k = 0; k < d; ++k) scaled[r * d + k] = e[k] * p.kappa;
  }
  const float* transposed = p.transposed.data();
  const float* column_bias = p.column_bias.data();
  for (int64_t r0 = 0; r0 < rows; r0 += kRows) {
    const float* e = scaled + r0 * d;
    for (int64_t c = 0; c < jp; c += kColumns) {
      Vec acc[kRows][2] = {};
      const float* column = transposed + c;
      for (int64_t k = 0; k < d; ++k, column += jp) {
        const Vec p0 = Load(column), p1 = Load(column + kLanes);
#pragma GCC unroll 8
        for (int q = 0; q < kRows; ++q) {
          const Vec x = Splat(e[q * d + k]);
          acc[q][0] += x * p0;
          acc[q][1] += x * p1;
        }
      }
      const Vec b0 = Load(column_bias + c), b1 = Load(column_bias + c + kLanes);
      float* out = tile + r0 * jp + c;
#pragma GCC unroll 8
      for (int q = 0; q < kRows; ++q) {
        Store(out + q * jp, Exp(acc[q][0] + b0));
        Store(out + q * jp + kLanes, Exp(acc[q][1] + b1));
      }
    }
  }
}

// d loss / d e for the block's rows: W [rows, j] x prototypes [j, dp] (kDv vectors of dims).
template <int kDv>
void BlockEmbeddingGradient(const NcaProblem& p, const float* tile, int64_t first, int64_t rows, float* out) {
  for (int64_t r0 = 0; r0 < rows; r0 += kRows) {
    Vec acc[kRows][kDv] = {};
    const float* w = tile + r0 * p.jp;
    const float* prototype_rows = p.rows.data();
    const int64_t jp = p.jp, dp = p.dp, count = p.j;
    for (int64_t j = 0; j < count; ++j) {
      Vec mu[kDv];
      for (int v = 0; v < kDv; ++v) mu[v] = Load(prototype_rows + j * dp + v * kLanes);
#pragma GCC unroll 8
      for (int q = 0; q < kRows; ++q) {
        const Vec x = Splat(w[q * jp + j]);
        for (int v = 0; v < kDv; ++v) acc[q][v] += x * mu[v];
      }
    }
    for (int q = 0; q < kRows && r0 + q < rows; ++q) {
      float buffer[kDv * kLanes];
      for (int v = 0; v < kDv; ++v) Store(buffer + v * kLanes, acc[q][v]);
      std::memcpy(out + p.row_index[first + r0 + q] * p.d, buffer, p.d * sizeof(float));
    }
  }
}

// Adds W[:, :s]^T x e (the block's rows) to accumulator [s, dp].
template <int kDv>
void BlockPrototypeGradient(const NcaProblem& p, const float* tile, int64_t first, int64_t rows, float* accumulator) {
  for (int64_t j0 = 0; j0 < p.s; j0 += kRows) {
    Vec acc[kRows][kDv] = {};
    const int64_t jp = p.jp, dp = p.dp;
    const float* embedding = p.embedding + first * dp;
    for (int64_t r = 0; r < rows; ++r) {
      Vec ev[kDv];
      for (int v = 0; v < kDv; ++v) ev[v] = Load(embedding + r * dp + v * kLanes);
      const float* w = tile + r * jp + j0;  // columns up to j0 + kRows - 1 exist: jp >= s rounded up to kRows
#pragma GCC unroll 8
      for (int q = 0; q < kRows; ++q) {
        const Vec x = Splat(w[q]);
        for (int v = 0; v < kDv; ++v) acc[q][v] += x * ev[v];
      }
    }
    for (int q = 0; q < kRows && j0 + q < p.s; ++q) {
      float* a = accumulator + (j0 + q) * p.dp;
      for (int v = 0; v < kDv; ++v) Store(a + v * kLanes, Load(a + v * kLanes) + acc[q][v]);
    }
  }
}

// Per-pixel sums of the block's tile, its loss sum, and the tile turned into W in place.
double BlockLikelihood(const NcaProblem& p, float* tile, int64_t first, int64_t rows) {
  const float scale = p.kappa / static_cast<float>(p.n);
  double loss = 0;
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t i = first + r;
    float* row = tile + r * p.jp;
    const IVec own_class = SplatI(p.pixel_class[i]);
    Vec same = {}, different = {};
    for (int64_t c = 0; c < p.jp; c += kLanes) {
      const Vec v = Load(row + c);
      const IVec mask = LoadI(p.column_class.data() + c) == own_class;
      same += Select(mask, v, Splat(0.0f));
      different += Select(mask, Splat(0.0f), v);
    }
    const float self = row[p.segment[i]];
    const float others = static_cast<float>(HorizontalSum(same)) - self;
    const bool use_others = others > 0;
    const float numerator = use_others ? others : self;
    const float denominator = numerator + static_cast<float>(HorizontalSum(different));
    loss += std::log(static_cast<double>(denominator)) - std::log(static_cast<double>(numerator));
    const float inv_den = 1.0f / denominator, inv_num = 1.0f / numerator;
    const Vec same_weight = Splat((inv_den - inv_num) * scale), other_weight = Splat(inv_den * scale);
    for (int64_t c = 0; c < p.jp; c += kLanes) {
      const IVec mask = LoadI(p.column_class.data() + c) == own_class;
      Store(row + c, Load(row + c) * Select(mask, same_weight, other_weight));
    }
    if (use_others) row[p.segment[i]] = 0.0f;
  }
  return loss;
}

template <int kDv>
void NcaChunk(const NcaProblem& p, int64_t chunk, float* scaled, float* tile, float* grad_embedding,
              float* prototype_accumulator, double* chunk_loss) {
  double loss = 0;
  const int64_t begin = chunk * kChunkBlocks * kBlock;
  const int64_t end = std::min(p.n, begin + kChunkBlocks * kBlock);
  std::fill(prototype_accumulator, prototype_accumulator + p.s * p.dp, 0.0f);
  for (int64_t first = begin; first < end; first += kBlock) {
    const int64_t rows = std::min(kBlock, end - first);
    BlockSimilarities(p, first, rows, scaled, tile);
    loss += BlockLikelihood(p, tile, first, rows);
    // Rows beyond `rows` (up to a multiple of kRows) hold similarities of a repeated pixel: zero them.
    for (int64_t r = rows; r < RoundUp(rows, kRows); ++r) std::fill(tile + r * p.jp, tile + (r + 1) * p.jp, 0.0f);
    BlockEmbeddingGradient<kDv>(p, tile, first, rows, grad_embedding);
    BlockPrototypeGradient<kDv>(p, tile, first, rows, prototype_accumulator);
  }
  *chunk_loss = loss;
}

class SegsortNcaLossOp : public OpKernel {
 public:
  explicit SegsortNcaLossOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("normalize_embedding", &normalize_));
  }

  void Compute(OpKernelContext* ctx) override {
    const Tensor& embedding = ctx->input(0);
    const Tensor& segment = ctx->input(1);
    const Tensor& prototype_class = ctx->input(2);
    const Tensor& memory = ctx->input(3);
    const Tensor& memory_class = ctx->input(4);
    const Tensor& concentration = ctx->input(5);
    OP_REQUIRES(ctx, embedding.dims() == 2 && memory.dims() == 2,
                InvalidArgument("segsort_nca_loss: embedding and memory must be matrices"));
    NcaProblem p;
    const int64_t total = embedding.dim_size(0);
    p.d = embedding.dim_size(1);
    p.s = prototype_class.NumElements();
    p.m = memory.dim_size(0);
    OP_REQUIRES(ctx, memory.dim_size(1) == p.d || p.m == 0,
                InvalidArgument("segsort_nca_loss: embedding dim ", p.d, " but memory ", memory.shape().DebugString()));
    OP_REQUIRES(ctx, segment.NumElements() == total && memory_class.NumElements() == p.m,
                InvalidArgument("segsort_nca_loss: segment ids / memory classes disagree with the embedding / memory"));
    OP_REQUIRES(ctx, concentration.NumElements() == 1,
                InvalidArgument("segsort_nca_loss: concentration must be a scalar"));
    p.dp = RoundUp(std::max<int64_t>(p.d, 1), kLanes);
    OP_REQUIRES(ctx, p.dp <= 8 * kLanes, InvalidArgument("segsort_nca_loss: embedding dim ", p.d, " > 128"));
    p.kappa = concentration.flat<float>()(0);
    p.j = p.s + p.m;
    p.jp = RoundUp(std::max<int64_t>(p.j, 1), kColumns);
    const int32_t* seg = segment.flat<int32_t>().data();
    const int32_t* proto_cls = prototype_class.flat<int32_t>().data();
    std::vector<int64_t> row_index;
    std::vector<int32_t> counted_segment, counted_class;
    row_index.reserve(total);
    for (int64_t i = 0; i < total; ++i) {
      OP_REQUIRES(ctx, seg[i] < p.s,
                  InvalidArgument("segsort_nca_loss: segment id ", seg[i], " outside [-1, ", p.s, ")"));
      if (seg[i] < 0) continue;
      row_index.push_back(i);
      counted_segment.push_back(seg[i]);
      counted_class.push_back(proto_cls[seg[i]]);
    }
    p.n = static_cast<int64_t>(row_index.size());
    p.row_index = row_index.data();
    p.segment = counted_segment.data();
    p.pixel_class = counted_class.data();

    Tensor* loss_out = nullptr;
    Tensor* grad_embedding = nullptr;
    Tensor* prototypes_out = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, TensorShape({}), &loss_out));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, TensorShape({total, p.d}), &grad_embedding));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(2, TensorShape({p.s, p.d}), &prototypes_out));
    float* ge = grad_embedding->flat<float>().data();
    std::fill_n(ge, total * p.d, 0.0f);  // ignored rows: no gradient

    // The counted pixels, zero padded to dp, and the prototypes: normalised sums of their segments' pixels
    // (summed in row order, as tf.math.unsorted_segment_sum; 0/0 = NaN for a segment without pixels, as the TF path).
    Tensor compact;
    OP_REQUIRES_OK(ctx, ctx->allocate_temp(tensorflow::DT_FLOAT, TensorShape({std::max<int64_t>(p.n, 1), p.dp}),
                                           &compact));
    float* rows_e = compact.flat<float>().data();
    const float* emb = embedding.flat<float>().data();
    std::vector<float> sums(p.s * p.dp, 0.0f), norms(p.s), row_norms(normalize_ ? p.n : 0);
    for (int64_t i = 0; i < p.n; ++i) {
      float* row = rows_e + i * p.dp;
      std::memcpy(row, emb + row_index[i] * p.d, p.d * sizeof(float));
      std::fill(row + p.d, row + p.dp, 0.0f);
      if (normalize_) {
        float squares = 0;
        for (int64_t k = 0; k < p.d; ++k) squares += row[k] * row[k];
        row_norms[i] = std::sqrt(squares);
        for (int64_t k = 0; k < p.d; ++k) row[k] /= row_norms[i];
      }
      float* sum = sums.data() + counted_segment[i] * p.dp;
      for (int64_t k = 0; k < p.d; ++k) sum[k] += row[k];
    }
    p.embedding = rows_e;
    float* protos = prototypes_out->flat<float>().data();
    for (int64_t j = 0; j < p.s; ++j) {
      float squares = 0;
      for (int64_t k = 0; k < p.d; ++k) squares += sums[j * p.dp + k] * sums[j * p.dp + k];
      norms[j] = std::sqrt(squares);
      for (int64_t k = 0; k < p.d; ++k) protos[j * p.d + k] = sums[j * p.dp + k] / norms[j];
    }
    if (p.n == 0) {
      loss_out->scalar<float>()() = std::numeric_limits<float>::quiet_NaN();  // mean of nothing, as tf
      return;
    }

    // Prototype layouts: column-major for the logits, row-major for d loss / d e.
    p.transposed.assign(p.d * p.jp, 0.0f);
    p.rows.assign(p.j * p.dp, 0.0f);
    p.column_bias.assign(p.jp, -std::numeric_limits<float>::infinity());
    p.column_class.assign(p.jp, std::numeric_limits<int32_t>::min());
    const float* mem = memory.flat<float>().data();
    const int32_t* mem_cls = memory_class.flat<int32_t>().data();
    for (int64_t j = 0; j < p.j; ++j) {
      const float* mu = j < p.s ? protos + j * p.d : mem + (j - p.s) * p.d;
      for (int64_t k = 0; k < p.d; ++k) {
        p.transposed[k * p.jp + j] = mu[k];
        p.rows[j * p.dp + k] = mu[k];
      }
      p.column_bias[j] = 0.0f;
      p.column_class[j] = j < p.s ? proto_cls[j] : mem_cls[j - p.s];
    }

    const int64_t chunks = (p.n + kChunkBlocks * kBlock - 1) / (kChunkBlocks * kBlock);
    Tensor accumulators;  // [chunks, s, dp]: through the allocator, so that memory statistics see it
    OP_REQUIRES_OK(ctx, ctx->allocate_temp(tensorflow::DT_FLOAT, TensorShape({chunks, p.s, p.dp}), &accumulators));
    float* acc = accumulators.flat<float>().data();
    std::vector<double> chunk_loss(chunks, 0.0);
    auto work = [&](int64_t begin, int64_t end) {
      std::vector<float> tile(RoundUp(kBlock, kRows) * p.jp), scaled(RoundUp(kBlock, kRows) * p.d);
      for (int64_t chunk = begin; chunk < end; ++chunk) {
        float* a = acc + chunk * p.s * p.dp;
        DispatchVectors(p.dp / kLanes, [&](auto vectors) {
          NcaChunk<decltype(vectors)::value>(p, chunk, scaled.data(), tile.data(), ge, a, &chunk_loss[chunk]);
        });
      }
    };
    auto* workers = ctx->device()->tensorflow_cpu_worker_threads()->workers;
    workers->ParallelFor(chunks, kChunkBlocks * kBlock * p.jp * (4 * p.d + 40), work);

    double loss = 0;
    for (int64_t c = 0; c < chunks; ++c) loss += chunk_loss[c];
    loss_out->scalar<float>()() = static_cast<float>(loss / static_cast<double>(p.n));
    // d loss / d prototype (chunk partials reduced in order), then through the normalisation to the segment sums:
    // (g - mu (g . mu)) / |sum|, which every pixel of the segment receives.
    std::vector<float> grad_sums(p.s * p.dp, 0.0f);
    workers->ParallelFor(p.s, chunks * p.d * 2, [&](int64_t begin, int64_t end) {
      for (int64_t j = begin; j < end; ++j) {
        float* g = grad_sums.data() + j * p.dp;
        for (int64_t k = 0; k < p.d; ++k) {
          float sum = 0;
          for (int64_t c = 0; c < chunks; ++c) sum += acc[(c * p.s + j) * p.dp + k];
          g[k] = sum;
        }
        float dot = 0;
        for (int64_t k = 0; k < p.d; ++k) dot += g[k] * protos[j * p.d + k];
        for (int64_t k = 0; k < p.d; ++k) g[k] = (g[k] - protos[j * p.d + k] * dot) / norms[j];
      }
    });
    workers->ParallelFor(p.n, p.d * 4, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        float* out = ge + row_index[i] * p.d;
        const float* g = grad_sums.data() + counted_segment[i] * p.dp;
        for (int64_t k = 0; k < p.d; ++k) out[k] += g[k];
        if (normalize_) {  // through y = x / |x|: (g - y (g . y)) / |x|
          const float* y = rows_e + i * p.dp;
          float dot = 0;
          for (int64_t k = 0; k < p.d; ++k) dot += out[k] * y[k];
          for (int64_t k = 0; k < p.d; ++k) out[k] = (out[k] - y[k] * dot) / row_norms[i];
        }
      }
    });
  }
 private:
  bool normalize_ = false;
};

// ------------------------------------------------------------------------------------------------------ k-means
template <int kFv, int kTile>
void KmeansImage(const float* embedding, const int32_t* initial, const bool* valid, int64_t pixels, int64_t f,
                 int64_t clusters, int iterations, int64_t* out) {
  constexpr int64_t kFp = kFv * kLanes;
  const int64_t pp = RoundUp(std::max<int64_t>(pixels, 1), kColumns);
  // Valid pixels' features transposed [f, pp] (pixels along the lanes), invalid and padding zero.
  std::vector<float> transposed(f * pp, 0.0f);
  std::vector<int32_t> labels(pp, 0);
  for (int64_t i = 0; i < pixels; ++i) {
    labels[i] = initial[i];
    if (!valid[i]) continue;
    for (int64_t k = 0; k < f; ++k) transposed[k * pp + i] = embedding[i * f + k];
  }
  std::vector<float> sums(clusters * kFp), prototypes(RoundUp(clusters, kTile) * kFp, 0.0f), bias(clusters);
  for (int it = 0; it < iterations; ++it) {
    // M-step: cluster sums of the valid pixels, in pixel order.
    std::fill(sums.begin(), sums.end(), 0.0f);
    for (int64_t i = 0; i < pixels; ++i) {
      if (!valid[i]) continue;
      float* s = sums.data() + labels[i] * kFp;
      const float* e = embedding + i * f;
      for (int64_t k = 0; k < f; ++k) s[k] += e[k];
    }
    for (int64_t c = 0; c < clusters; ++c) {
      float squares = 0;
      for (int64_t k = 0; k < f; ++k) squares += sums[c * kFp + k] * sums[c * kFp + k];
      const float norm = std::sqrt(squares);
      for (int64_t k = 0; k < f; ++k) prototypes[c * kFp + k] = norm > 0 ? sums[c * kFp + k] / norm : 0.0f;
      bias[c] = norm > 0 ? 0.0f : -std::numeric_limits<float>::infinity();
    }
    bool changed = false;
    // E-step: first arg-max over the clusters, 32 pixels x 4 clusters per register tile.
    for (int64_t i0 = 0; i0 < pp; i0 += kColumns) {
      Vec best[2] = {Splat(-std::numeric_limits<float>::infinity()), Splat(-std::numeric_limits<float>::infinity())};
      IVec best_index[2] = {SplatI(0), SplatI(0)};
      for (int64_t c0 = 0; c0 < clusters; c0 += kTile) {
        Vec acc[kTile][2] = {};
        const int64_t count = std::min<int64_t>(kTile, clusters - c0);
        const float* prototype = prototypes.data() + c0 * kFp;  // rows up to c0 + kTile - 1 exist (padded)
        const float* column = transposed.data() + i0;
        for (int64_t k = 0; k < f; ++k, column += pp) {
          const Vec e0 = Load(column), e1 = Load(column + kLanes);
#pragma GCC unroll 8
          for (int q = 0; q < kTile; ++q) {
            const Vec x = Splat(prototype[q * kFp + k]);
            acc[q][0] += x * e0;
            acc[q][1] += x * e1;
          }
        }
        for (int q = 0; q < count; ++q) {
          for (int h = 0; h < 2; ++h) {
            const Vec similarity = acc[q][h] + Splat(bias[c0 + q]);
            // The first cluster always takes the slot (as tf.argmax starting from index 0), later ones when
            // strictly greater.
            const IVec better = (c0 + q == 0) ? SplatI(-1) : (similarity > best[h]);
            best[h] = Select(better, similarity, best[h]);
            best_index[h] = better ? SplatI(static_cast<int32_t>(c0 + q)) : best_index[h];
          }
        }
      }
      for (int h = 0; h < 2; ++h) {
        for (int l = 0; l < kLanes; ++l) {
          const int64_t i = i0 + h * kLanes + l;
          if (i < pixels && valid[i]) {
            changed |= labels[i] != best_index[h][l];
            labels[i] = best_index[h][l];
          }
        }
      }
    }
    // The M-step is a function of the labels: unchanged labels are the fixed point every further iteration
    // reproduces exactly, so stopping here gives the same result as running all iterations.
    if (!changed) break;
  }
  for (int64_t i = 0; i < pixels; ++i) out[i] = valid[i] ? labels[i] : initial[i];
}

// KmeansImage for the feature width fv (vectors of 16).
template <int kTile>
void Kmeans(int64_t fv, const float* embedding, const int32_t* initial, const bool* valid, int64_t pixels, int64_t f,
            int64_t clusters, int iterations, int64_t* out) {
  DispatchVectors(fv, [&](auto vectors) {
    KmeansImage<decltype(vectors)::value, kTile>(embedding, initial, valid, pixels, f, clusters, iterations, out);
  });
}

// Unit-length x (float, no epsilon: a zero vector gives NaN, as segsort.clustering.normalize_embedding).
inline void NormalizeRow(float* x, int64_t n) {
  float squares = 0;
  for (int64_t k = 0; k < n; ++k) squares += x[k] * x[k];
  const float norm = std::sqrt(squares);
  for (int64_t k = 0; k < n; ++k) x[k] /= norm;
}

class SegsortBatchKmeansOp : public OpKernel {
 public:
  explicit SegsortBatchKmeansOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("num_clusters", &clusters_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("iterations", &iterations_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("normalize_embedding", &normalize_));
  }

  void Compute(OpKernelContext* ctx) override {
    const Tensor& embedding = ctx->input(0);
    const Tensor& locations = ctx->input(1);
    const Tensor& initial = ctx->input(2);
    const Tensor& valid = ctx->input(3);
    OP_REQUIRES(ctx, embedding.dims() == 3 && locations.dims() == 3,
                InvalidArgument("segsort_batch_kmeans: embedding and locations must be [B,P,D] and [B,P,L]"));
    const int64_t batch = embedding.dim_size(0), pixels = embedding.dim_size(1), d = embedding.dim_size(2);
    const int64_t l = locations.dim_size(2), f = d + l;
    OP_REQUIRES(ctx, locations.dim_size(0) == batch && locations.dim_size(1) == pixels,
                InvalidArgument("segsort_batch_kmeans: locations ", locations.shape().DebugString(),
                                " disagree with the embedding ", embedding.shape().DebugString()));
    OP_REQUIRES(ctx, initial.dims() == 2 && initial.dim_size(0) == batch && initial.dim_size(1) == pixels &&
                         valid.shape() == initial.shape(),
                InvalidArgument("segsort_batch_kmeans: labels / valid must be [B,P] = ", batch, "x", pixels));
    OP_REQUIRES(ctx, f <= 8 * kLanes, InvalidArgument("segsort_batch_kmeans: feature dim ", f, " > 128"));
    OP_REQUIRES(ctx, clusters_ > 0, InvalidArgument("segsort_batch_kmeans: num_clusters must be positive"));
    const int32_t* init = initial.flat<int32_t>().data();
    const bool* val = valid.flat<bool>().data();
    for (int64_t i = 0; i < batch * pixels; ++i) {
      OP_REQUIRES(ctx, !val[i] || (init[i] >= 0 && init[i] < clusters_),
                  InvalidArgument("segsort_batch_kmeans: initial label ", init[i], " outside [0, ", clusters_, ")"));
    }
    Tensor* out = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, initial.shape(), &out));
    const float* emb = embedding.flat<float>().data();
    const float* loc = locations.flat<float>().data();
    int64_t* labels = out->flat<int64_t>().data();
    const int64_t fv = std::max<int64_t>(1, (f + kLanes - 1) / kLanes);
    // Cluster tiles of 5 when they divide the clusters (the 5x5 grid: no padded cluster rows), else 8.
    auto image = clusters_ % 5 == 0 ? &Kmeans<5> : &Kmeans<8>;
    auto work = [&](int64_t begin, int64_t end) {
      std::vector<float> features(pixels * f);
      for (int64_t b = begin; b < end; ++b) {
        const int64_t o = b * pixels;
        // Features of the clustering: normalise([unit embedding, locations]).
        for (int64_t i = 0; i < pixels; ++i) {
          float* x = features.data() + i * f;
          std::memcpy(x, emb + (o + i) * d, d * sizeof(float));
          if (normalize_) NormalizeRow(x, d);
          std::memcpy(x + d, loc + (o + i) * l, l * sizeof(float));
          NormalizeRow(x, f);
        }
        image(fv, features.data(), init + o, val + o, pixels, f, clusters_, iterations_, labels + o);
      }
    };
    ctx->device()->tensorflow_cpu_worker_threads()->workers->ParallelFor(
        batch, std::max<int64_t>(1, pixels * clusters_ * f * 2 * iterations_), work);
  }

 private:
  int clusters_ = 0;
  int iterations_ = 0;
  bool normalize_ = false;
};

}  // namespace

REGISTER_OP("SegsortNcaLoss")
    .Input("embedding: float")
    .Input("segment_ids: int32")
    .Input("prototype_class: int32")
    .Input("memory: float")
    .Input("memory_class: int32")
    .Input("concentration: float")
    .Attr("normalize_embedding: bool = false")
    .Output("loss: float")
    .Output("grad_embedding: float")
    .Output("prototypes: float")
    .SetShapeFn([](tensorflow::shape_inference::InferenceContext* c) {
      c->set_output(0, c->Scalar());
      c->set_output(1, c->input(0));
      c->set_output(2, c->Matrix(c->Dim(c->input(2), 0), c->Dim(c->input(0), 1)));
      return absl::OkStatus();
    })
    .Doc(R"doc(
Mean NCA negative log-likelihood of the SegSort vMF mixture over the pixels with segment id >= 0 (-1: ignored),
the embedding rows normalised first with normalize_embedding (the gradient is then w.r.t. the raw rows),
the prototypes being the normalised sums of their segments' pixels, and its gradient (for an upstream gradient of
1) w.r.t. the embedding [N, D], through the prototypes too (the memory [M, D] gets none). prototypes: [S, D].
)doc");

REGISTER_OP("SegsortBatchKmeans")
    .Input("embedding: float")
    .Input("locations: float")
    .Input("initial_labels: int32")
    .Input("valid: bool")
    .Attr("num_clusters: int")
    .Attr("iterations: int >= 0")
    .Attr("normalize_embedding: bool = false")
    .Output("labels: int64")
    .SetShapeFn([](tensorflow::shape_inference::InferenceContext* c) {
      c->set_output(0, c->input(2));
      return absl::OkStatus();
    })
    .Doc(R"doc(
vMF k-means of every image of a batch on the features normalise([embedding (normalised first with
normalize_embedding), locations]) ([P, D + L], L may be 0) from its initial labels; invalid pixels keep their
initial label.
)doc");

REGISTER_KERNEL_BUILDER(Name("SegsortNcaLoss").Device(DEVICE_CPU), SegsortNcaLossOp);
REGISTER_KERNEL_BUILDER(Name("SegsortBatchKmeans").Device(DEVICE_CPU), SegsortBatchKmeansOp);
