"""Speed / peak-memory benchmark: the supervised SegSort loss, ours vs a literal transcription of the original.

Both compute `add_segsort_loss` forward + gradient w.r.t. the raw embedding for a batch of 8 embeddings of
42x42x32 (336 crops), 5x5 grid, 10 k-means iterations, kappa 10, 2 inert memory banks (the bash scripts' setting),
each as one `tf.function` graph, like the TF1 session:
* original: the per-image Python loop of `train_utils.add_segsort_loss` (gather the valid pixels, k-means with
  one-hot matmul M-steps, one graph per image), then `_calculate_vmf_loss` with the similarity matmul split in B
  chunks and the dense same-/different-class masks of `_calculate_log_likelihood`, differentiated by autodiff;
* ours: `segsort.losses.add_segsort_loss` with `--impl` (default auto = the C++ CPU kernels of `segsort.kernel`):
  the k-means of all images in one op (images in parallel, stops at the fixed point) and the prototypes + NCA
  likelihood + its gradient in one op (blocks of pixels against all prototypes in cache, polynomial exp, no
  [pixels x prototypes] tensor, the whole grid with ignored pixels left out). `--impl tf` times the TensorFlow path
  (XLA-compiled batched k-means, NCA op with a written-out gradient).

Method. Time: after 2 warm-up calls (tracing), the variants are called in alternation for several rounds (results fetched
to NumPy); the fastest call of each is compared (the least disturbed one on a shared machine), medians are shown.
Peak memory: TensorFlow's own allocator statistics, `tf.config.experimental.get_memory_info('CPU:0')` (bytes of
tensors the CPU allocator hands out; it counts every intermediate tensor of the graph, not RSS): after
`reset_memory_stats`, peak - current before the call = the most memory the call had live at once beyond its inputs.
Both variants run in this process, one after the other, on the same inputs.

Ends with `segsort loss: time ratio <r>x, peak memory ratio <m>x` (original / ours).

Run: python benchmarks/segsort_loss.py [--batch 8] [--size 42] [--repeats 7] [--impl auto|kernel|tf]
"""
import argparse
import os
import statistics
import sys
import time

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from segsort import clustering, losses  # noqa: E402

EMBEDDING_DIM, NUM_CLUSTERS, ITERATIONS, KAPPA, NUM_BANKS, IGNORE = 32, 5, 10, 10.0, 2, 255


# ------------------------------------------------------------------------------ literal transcription (per image)
def _normalize(x):
    return x / tf.norm(x, axis=-1, keepdims=True)


def _prototypes_one_hot(embedding, labels, max_label):
    one_hot = tf.one_hot(labels, tf.cast(max_label, tf.int32))
    return _normalize(tf.matmul(one_hot, embedding, transpose_a=True))


def _kmeans_literal(embedding, labels, max_label, iterations):
    for _ in range(iterations):
        prototypes = _prototypes_one_hot(embedding, labels, max_label)
        labels = tf.argmax(tf.matmul(embedding, prototypes, transpose_b=True), axis=1)
    return labels


def original_segsort_loss(embedding, labels, cluster_labels, loc_features, memory, memory_labels):
    """The original's graph: Python loop over images, dense masks, autodiff."""
    embedding = _normalize(embedding)
    batch = embedding.shape[0]
    labels = tf.reshape(labels, [batch, -1])
    cluster_labels = tf.reshape(cluster_labels, [batch, -1])
    semantic_list, cluster_list, embedding_list = [], [], []
    for b in range(batch):
        sem = labels[b]
        valid = tf.where(tf.not_equal(sem, IGNORE))
        sem = tf.squeeze(tf.gather(sem, valid), 1)
        clu = tf.squeeze(tf.gather(cluster_labels[b], valid), 1)
        loc = tf.squeeze(tf.gather(tf.reshape(loc_features[b], [-1, 2]), valid), 1)
        emb = tf.squeeze(tf.gather(tf.reshape(embedding[b], [-1, EMBEDDING_DIM]), valid), 1)
        with_loc = _normalize(tf.concat([emb, loc], 1))
        clu = tf.cast(_kmeans_literal(with_loc, clu, NUM_CLUSTERS ** 2, ITERATIONS), tf.int64) + b * 256
        semantic_list.append(sem)
        cluster_list.append(clu)
        embedding_list.append(emb)
    semantic = tf.concat(semantic_list, 0)
    clusters = tf.concat(cluster_list, 0)
    embedding = tf.concat(embedding_list, 0)
    keys, idx = tf.unique(tf.cast(semantic, tf.int64) + clusters * 256)
    idx = tf.cast(idx, tf.int32)
    proto_labels = tf.cast(keys % 256, tf.int32)
    prototypes = _prototypes_one_hot(embedding, idx, tf.size(proto_labels))
    prototypes = tf.concat([prototypes, _normalize(memory)], 0)
    proto_labels = tf.concat([proto_labels, memory_labels], 0)
    step = tf.shape(embedding)[0] // batch
    chunks = [embedding[step * s:step * (s + 1)] if s < batch - 1 else embedding[step * s:] for s in range(batch)]
    similarities = tf.exp(tf.concat([tf.matmul(c, prototypes, transpose_b=True) * KAPPA for c in chunks], 0))
    own = tf.gather_nd(similarities, tf.stack([tf.range(tf.shape(similarities)[0]), idx], 1))
    same = tf.cast(tf.equal(tf.reshape(semantic, [-1, 1]), tf.reshape(proto_labels, [1, -1])), tf.float32)
    others = tf.reduce_sum(similarities * same, 1) - own
    numerator = tf.where(others > 0, others, own)
    different = tf.cast(tf.not_equal(tf.reshape(semantic, [-1, 1]), tf.reshape(proto_labels, [1, -1])), tf.float32)
    denominator = tf.reduce_sum(similarities * different, 1) + numerator
    return tf.reduce_mean(-tf.math.log(numerator / denominator))


# ------------------------------------------------------------------------------------------------------ harness
def make_inputs(batch, size, seed=0):
    """Blocky labels with some void, the reader's grid and location features, a smooth random embedding."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 21, size=(batch, (size + 9) // 10, (size + 9) // 10))
    labels = np.repeat(np.repeat(coarse, 10, 1), 10, 2)[:, :size, :size]
    labels = np.where(rng.random(labels.shape) < 0.05, IGNORE, labels).astype(np.int32)[..., None]
    grid = clustering.initialize_cluster_labels([NUM_CLUSTERS] * 2, [size, size]).numpy()
    clusters = np.broadcast_to(grid[None, ..., None], labels.shape).astype(np.int32)
    loc = clustering.generate_location_features([size, size], 'float').numpy()
    loc = np.broadcast_to(loc[None], (batch, size, size, 2)).astype(np.float32)
    class_means = rng.normal(size=(21, EMBEDDING_DIM))
    embedding = class_means[np.where(labels[..., 0] == IGNORE, 0, labels[..., 0])] + rng.normal(
        size=(batch, size, size, EMBEDDING_DIM))
    return (tf.constant(embedding.astype(np.float32)), tf.constant(labels), tf.constant(clusters),
            tf.constant(loc))


def _call(step, inputs):
    loss, grad = step(*inputs)
    grad.numpy()
    return float(loss)


def measure(steps, inputs, repeats):
    """Per variant: (fastest seconds, median seconds, peak bytes beyond the live memory before a call, loss).

    Variants are timed in alternation, round after round, so a burst of load on a shared machine hits both; the
    fastest call is the least disturbed one. Peak memory is read from one separate call per variant.
    """
    results = {}
    for name, step in steps.items():
        for _ in range(2):  # trace
            _call(step, inputs)
        tf.config.experimental.reset_memory_stats('CPU:0')
        before = tf.config.experimental.get_memory_info('CPU:0')['current']
        loss = _call(step, inputs)
        peak = tf.config.experimental.get_memory_info('CPU:0')['peak'] - before
        if peak <= 0:
            raise RuntimeError(f'{name}: allocator reported no memory use ({peak} bytes); the instrument is broken')
        results[name] = {'times': [], 'peak': peak, 'loss': loss}
    for _ in range(repeats):
        for name, step in steps.items():
            start = time.perf_counter()
            _call(step, inputs)
            results[name]['times'].append(time.perf_counter() - start)
    return results


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--batch', type=int, default=8, help='images per batch')
    parser.add_argument('--size', type=int, default=42, help='embedding side (336 crops -> 42)')
    parser.add_argument('--repeats', type=int, default=7, help='timed calls per variant')
    parser.add_argument('--impl', default='auto', choices=losses.segsort_kernel.IMPLEMENTATIONS,
                        help="our loss: auto (the C++ kernels on CPU), kernel, or tf (the TensorFlow ops)")
    args = parser.parse_args(argv)
    inputs = make_inputs(args.batch, args.size)
    bank = losses.MemoryBank(NUM_BANKS, NUM_CLUSTERS ** 2 * args.batch, EMBEDDING_DIM, seed=0)
    memory, memory_labels = tf.concat(bank.memory, 0), tf.concat(bank.memory_labels, 0)

    @tf.function
    def original_step(embedding, labels, clusters, loc):
        with tf.GradientTape() as tape:
            tape.watch(embedding)
            loss = original_segsort_loss(embedding, labels, clusters, loc, memory, memory_labels)
        return loss, tape.gradient(loss, embedding)

    @tf.function
    def ours_step(embedding, labels, clusters, loc):
        with tf.GradientTape() as tape:
            tape.watch(embedding)
            loss = losses.add_segsort_loss(embedding, labels, EMBEDDING_DIM, IGNORE, KAPPA, clusters, NUM_CLUSTERS,
                                           ITERATIONS, NUM_BANKS, loc, memory_bank=bank, impl=args.impl)
        return loss, tape.gradient(loss, embedding)

    shape = [args.batch, args.size, args.size, EMBEDDING_DIM]
    results = measure({'original': original_step, 'ours': ours_step}, inputs, args.repeats)
    for name, r in results.items():
        print(f'{name:8s} {shape}: {1e3 * min(r["times"]):8.1f} ms fwd+bwd (fastest of {args.repeats}; median '
              f'{1e3 * statistics.median(r["times"]):.1f}), peak memory {r["peak"] / 2 ** 20:8.1f} MB (TF CPU '
              f'allocator peak beyond the inputs, tf.config.experimental.get_memory_info), loss {r["loss"]:.6f}',
              flush=True)
    orig, ours = results['original'], results['ours']
    print(f'segsort loss: time ratio {min(orig["times"]) / min(ours["times"]):.1f}x, '
          f'peak memory ratio {orig["peak"] / ours["peak"]:.1f}x')


if __name__ == '__main__':
    main()
