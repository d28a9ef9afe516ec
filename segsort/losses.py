"""SegSort losses: supervised segment sorting (k-means segments, NCA vMF likelihood) and the unsupervised variant.

`add_segsort_loss` and `add_unsupervised_segsort_loss` keep the names, argument order and values of
`network/segsort/train_utils.py`. How they are computed differs:
  * k-means runs for all images of the batch in one batched set of ops (`clustering.batch_kmeans_with_initial_labels`)
    instead of a Python loop that builds one graph per image;
  * the NCA likelihood is one fused op (`vmf_nca_loss`) whose gradient is written out: the [pixels x prototypes]
    similarity matrix is the only large tensor kept between the passes, instead of the several same-sized masks
    and products the original keeps for autodiff;
  * a batch without valid pixels gives loss 0 instead of NaN.

Memory bank (aaf_segsort.md 7.3 step 5, quirk Q-S1): the original creates `num_banks` banks of 25*B random
prototypes labelled 0 whose update never runs. `MemoryBank(..., fifo=False)` (the default) reproduces that inert,
random, label-0 memory; `fifo=True` makes the intended first-in-first-out update actually happen.
"""
import tensorflow as tf

from segsort import clustering

LABEL_DIVISOR = 256


class MemoryBank(tf.Module):
    """Prototype memory of the supervised loss: variables `memory_{b}` [size, D] and `memory_labels_{b}` [size].

    Args:
      num_banks: number of banks (2 in the original scripts; 0 = none).
      size: prototypes per bank (the original: num_clusters**2 * batch_size).
      embedding_dim: D.
      fifo: False = the original's inert memory (never updated, Q-S1); True = after every loss evaluation the
        banks shift by one and the newest bank receives a random permutation of the batch's prototypes (the
        remaining rows keep their previous content when the batch has fewer than `size` segments). The
        permutation is stateless, drawn from (seed, number of updates so far; the count is the checkpointed
        variable `memory_updates`), so every replica of a multi-device step, a single device given the same global
        batch, and a resumed run draw the same one.
      seed: initialiser and permutation seed (truncated normal, std 1, as `tf.truncated_normal_initializer()`).
    """

    def __init__(self, num_banks, size, embedding_dim, fifo=False, seed=None):
        super().__init__(name='segsort_memory')
        self.num_banks, self.size, self.embedding_dim, self.fifo = int(num_banks), int(size), int(embedding_dim), fifo
        init = tf.keras.initializers.TruncatedNormal(mean=0.0, stddev=1.0, seed=seed)
        sync = dict(trainable=False, aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
        self.memory = [tf.Variable(init([self.size, self.embedding_dim]), name=f'memory_{b}', **sync)
                       for b in range(self.num_banks)]
        self.memory_labels = [tf.Variable(tf.zeros([self.size], tf.int32), name=f'memory_labels_{b}', **sync)
                              for b in range(self.num_banks)]
        self.seed = 0 if seed is None else int(seed)
        self.updates = tf.Variable(tf.constant(0, tf.int64), name='memory_updates', **sync) if fifo else None
        from common.models.naming import set_original_name
        for b in range(self.num_banks):
            set_original_name(self.memory[b], f'memory_{b}')
            set_original_name(self.memory_labels[b], f'memory_labels_{b}')

    @property
    def all_variables(self):
        return self.memory + self.memory_labels + ([self.updates] if self.updates is not None else [])

    def read(self):
        """(normalised prototypes [num_banks*size, D], labels [num_banks*size])."""
        return (clustering.normalize_embedding(tf.concat([tf.convert_to_tensor(m) for m in self.memory], 0)),
                tf.concat([tf.convert_to_tensor(m) for m in self.memory_labels], 0))

    def update(self, prototypes, prototype_labels):
        """FIFO update with this batch's prototypes (no-op unless fifo)."""
        if not self.fifo or not self.num_banks:
            return
        prototypes = tf.stop_gradient(prototypes)
        seed = tf.stack([tf.constant(self.seed, tf.int64), self.updates.read_value()])
        order = tf.argsort(tf.random.stateless_uniform(tf.shape(prototype_labels), seed))[:self.size]
        count = tf.shape(order)[0]
        newest = tf.concat([tf.gather(prototypes, order), self.memory[-1][count:]], 0)
        newest_labels = tf.concat([tf.gather(prototype_labels, order), self.memory_labels[-1][count:]], 0)
        for b in range(self.num_banks - 1):
            self.memory[b].assign(self.memory[b + 1])
            self.memory_labels[b].assign(self.memory_labels[b + 1])
        self.memory[-1].assign(tf.ensure_shape(newest, [self.size, self.embedding_dim]))
        self.memory_labels[-1].assign(tf.ensure_shape(newest_labels, [self.size]))
        self.updates.assign_add(1)


class _PrototypeBlock:
    """A column block of the similarity matrix: its prototypes and their classes, numbered locally.

    `local_one_hot` [S_b, C_b] maps the block's prototypes to the C_b classes that occur in it, `to_global`
    [C_b, C] those classes to the compact classes of the whole loss. Class sums are taken with the local one-hot
    (C_b columns, not C: a memory bank that holds one label costs a matrix-vector product) and moved to the global
    classes with the small exact 0/1 matrix `to_global`.
    """

    def __init__(self, prototypes, prototype_class, num_classes, dtype):
        self.prototypes = prototypes
        classes, local_class = tf.unique(prototype_class)
        self.num_local_classes = tf.size(classes)
        self.local_one_hot = tf.one_hot(local_class, self.num_local_classes, dtype=dtype)  # [S_b, C_b]
        self.to_global = tf.one_hot(classes, num_classes, dtype=dtype)  # [C_b, C]


def vmf_nca_loss(embedding, prototypes, segment_ids, prototype_class, pixel_class, num_classes, concentration,
                 num_trainable_prototypes=None):
    """Mean NCA negative log-likelihood of the vMF mixture, with a hand-written gradient.

    For pixel i with segment s_i and class c_i, S_ij = exp(kappa e_i . mu_j):
    numerator_i = sum_{j != s_i, class j == c_i} S_ij if that is > 0 else S_{i,s_i};
    loss_i = -log(numerator_i / (numerator_i + sum_{class j != c_i} S_ij)).

    Args:
      embedding: float [N, D] unit rows.
      prototypes: float [S, D] unit rows (the batch's segments, then any memory rows).
      segment_ids: int32 [N] row of each pixel's own segment in `prototypes`.
      prototype_class: int32 [S] compact class index (0..num_classes-1) of every prototype.
      pixel_class: int32 [N] compact class index of every pixel.
      num_classes: number of compact classes.
      concentration: kappa.
      num_trainable_prototypes: optional T: only the first T prototypes (the batch's segments, which hold every
        `segment_ids` row) get a gradient; the rest (a memory bank: variables outside the graph of the embedding)
        get zeros and their [N, S-T] block skips the prototype-gradient matmul. Default: all.
    Returns:
      scalar float32; gradients flow to `embedding` and `prototypes`.
    """
    kappa = tf.cast(concentration, embedding.dtype)
    dtype = embedding.dtype
    if num_trainable_prototypes is None:
        class_blocks = [prototype_class]
    else:
        class_blocks = [prototype_class[:num_trainable_prototypes], prototype_class[num_trainable_prototypes:]]

    @tf.custom_gradient
    def loss_fn(emb, protos):
        rows = [protos] if num_trainable_prototypes is None else [protos[:num_trainable_prototypes],
                                                                  protos[num_trainable_prototypes:]]
        blocks = [_PrototypeBlock(p, c, num_classes, dtype) for p, c in zip(rows, class_blocks)]
        # kappa goes onto the [N, D] side of the matmul, not onto the [N, S] logits.
        scaled = emb * kappa
        similarities = [tf.exp(tf.matmul(scaled, block.prototypes, transpose_b=True)) for block in blocks]
        # [N, C] class sums: per block over its own classes (exact 0/1 products and sums of zeros to go global).
        class_sums = tf.add_n([tf.matmul(tf.matmul(sims, block.local_one_hot), block.to_global)
                               for sims, block in zip(similarities, blocks)])
        own_class = tf.one_hot(pixel_class, num_classes, on_value=True, off_value=False)
        same = tf.reduce_sum(tf.where(own_class, class_sums, 0.0), axis=1)
        different = tf.reduce_sum(tf.where(own_class, 0.0, class_sums), axis=1)
        self_sims = tf.gather(similarities[0], segment_ids, axis=1, batch_dims=1)
        others = same - self_sims
        use_others = others > 0
        numerator = tf.where(use_others, others, self_sims)
        denominator = numerator + different
        count = tf.cast(tf.shape(emb)[0], dtype)
        loss = tf.reduce_mean(tf.math.log(denominator) - tf.math.log(numerator))

        def grad(upstream):
            # d loss_i / d S_ij = 1/den_i for every denominator term, minus 1/num_i for numerator terms. Every
            # same-class prototype is a numerator term except the own segment when other same-class segments
            # exist (then it is in neither sum); without them only the own segment is same-class. So the
            # coefficient depends on (pixel, class of j) -- a [N, C] table gathered by prototype class -- plus a
            # correction at the own segment.
            scale = upstream * kappa / count
            inv_den, inv_num = 1.0 / denominator, 1.0 / numerator
            table = tf.where(own_class, (inv_den - inv_num)[:, tf.newaxis], inv_den[:, tf.newaxis]) * scale
            # S is kept from the forward pass: at the backward peak it lives next to its gradient whether kept or
            # recomputed, so keeping it costs no peak memory and saves a matmul and an exp over [N, S].
            emb_grads, logits_grads = [], []
            for b, (sims, block) in enumerate(zip(similarities, blocks)):
                local_table = tf.matmul(table, block.to_global, transpose_b=True)  # [N, C_b], exact
                if b == 0:
                    # table[:, class_j] for every prototype j as one small matmul (faster than a gather).
                    logits_grads.append(sims * tf.matmul(local_table, block.local_one_hot, transpose_b=True))
                    emb_grads.append(tf.matmul(logits_grads[0], block.prototypes))
                else:
                    emb_grads.append(_untrainable_block_grad(sims, block, local_table))
            correction = tf.where(use_others, (inv_num - inv_den) * self_sims * scale, 0.0)
            # The correction touches one entry per row: apply it to the products, not to the [N, S] matrix.
            grad_emb = tf.add_n(emb_grads + [correction[:, tf.newaxis] * tf.gather(protos, segment_ids)])
            # (E^T G)^T: a plain [D, N] x [N, T] product; oneDNN is much slower with G transposed.
            grad_protos = tf.transpose(tf.matmul(tf.transpose(emb), logits_grads[0])) + tf.math.unsorted_segment_sum(
                correction[:, tf.newaxis] * emb, segment_ids, tf.shape(rows[0])[0])
            if len(rows) > 1:
                grad_protos = tf.concat([grad_protos, tf.zeros_like(rows[1])], 0)
            return grad_emb, grad_protos

        return loss, grad

    return loss_fn(embedding, prototypes)


def _untrainable_block_grad(similarities, block, local_table):
    """Embedding gradient through a block of prototypes that get none (a memory bank).

    (S o T) P with T[i, j] = local_table[i, class_j]. When the whole block has one class (the inert memory: all
    label 0), T is constant along each row and this is local_table[:, 0] * (S P): one matmul, no [N, S_b] product.
    """
    def one_class():
        return local_table[:, :1] * tf.matmul(similarities, block.prototypes)

    def several_classes():
        coefficients = tf.matmul(local_table, block.local_one_hot, transpose_b=True)
        return tf.matmul(similarities * coefficients, block.prototypes)

    return tf.cond(tf.equal(block.num_local_classes, 1), one_class, several_classes)


def segment_loss(embedding, semantic_labels, segment_ids, prototype_labels, concentration, memory=None,
                 memory_labels=None):
    """The supervised vMF loss of given segments (`_calculate_vmf_loss` of the original, without the memory update).

    Args:
      embedding: float [N, D] unit rows of the valid pixels.
      semantic_labels: int [N].
      segment_ids: int32 [N] segment of each pixel (0..S-1).
      prototype_labels: int32 [S] semantic label of each segment.
      concentration: kappa.
      memory, memory_labels: optional extra prototypes [M, D] (unit rows) and their labels [M].
    Returns:
      (loss scalar, prototypes [S, D]).
    """
    num_segments = tf.shape(prototype_labels)[0]
    prototypes = clustering.calculate_prototypes_from_labels(embedding, segment_ids, num_segments)
    all_prototypes, all_labels = prototypes, prototype_labels
    if memory is not None:
        all_prototypes = tf.concat([prototypes, tf.cast(memory, prototypes.dtype)], 0)
        all_labels = tf.concat([prototype_labels, tf.cast(memory_labels, prototype_labels.dtype)], 0)
    classes, prototype_class = tf.unique(all_labels)
    pixel_class = tf.gather(prototype_class, segment_ids)
    # Memory rows are variables outside the embedding's graph: no gradient, no prototype-gradient matmul for them.
    loss = vmf_nca_loss(embedding, all_prototypes, segment_ids, prototype_class, pixel_class, tf.size(classes),
                        concentration, None if memory is None else num_segments)
    return loss, prototypes


def add_segsort_loss(embedding, labels, embedding_dim, ignore_label, concentration, cluster_labels, num_clusters,
                     kmeans_iterations, num_banks, loc_features, memory_bank=None):
    """Supervised SegSort loss (aaf_segsort.md 7.3).

    Per image: valid pixels (label != ignore_label) are clustered by vMF k-means on [embedding, location]
    (re-normalised), starting from `cluster_labels` with num_clusters**2 clusters; segments are the
    (cluster, class) pairs of the batch; loss = NCA likelihood of every pixel against all segment prototypes
    (plus the memory bank).

    Args:
      embedding: float [B, h, w, D] raw network output (normalised here).
      labels: int [B, h, w, 1] semantic labels at the embedding's resolution.
      embedding_dim: D.
      ignore_label: label of pixels left out (255).
      concentration: kappa (10).
      cluster_labels: int [B, h, w, 1] initial clusters (the reader's grid, shrunk).
      num_clusters: clusters per axis (5 -> 25 clusters per image).
      kmeans_iterations: M/E iterations (10).
      num_banks: memory banks (0 = none); with num_banks > 0 pass `memory_bank`.
      loc_features: float [B, h, w, 2] (y, x) location features.
      memory_bank: a `MemoryBank` (its fifo flag decides whether it is updated).
    Returns:
      scalar loss (0 when no pixel is valid).
    """
    embedding = clustering.normalize_embedding(tf.convert_to_tensor(embedding))
    batch_size = tf.shape(embedding)[0]
    flat_embedding = tf.reshape(embedding, [batch_size, -1, embedding_dim])
    labels = tf.reshape(tf.cast(labels, tf.int32), [batch_size, -1])
    clusters = tf.reshape(tf.cast(cluster_labels, tf.int32), [batch_size, -1])
    locations = tf.reshape(tf.cast(loc_features, embedding.dtype), [batch_size, -1, 2])
    valid = tf.not_equal(labels, ignore_label)

    with_location = clustering.normalize_embedding(tf.concat([flat_embedding, locations], 2))
    clusters = clustering.batch_kmeans_with_initial_labels(tf.stop_gradient(with_location), clusters,
                                                           num_clusters * num_clusters, kmeans_iterations, valid,
                                                           jit_compile=True)
    clusters = clusters + tf.range(tf.cast(batch_size, tf.int64), dtype=tf.int64)[:, tf.newaxis] * LABEL_DIVISOR

    # Valid pixels of all images in row-major order, as the original's per-image gathers concatenated.
    valid_index = tf.where(valid)
    semantic = tf.gather_nd(labels, valid_index)
    pixel_clusters = tf.gather_nd(clusters, valid_index)
    pixel_embedding = tf.gather_nd(flat_embedding, valid_index)
    segment_ids, prototype_labels = clustering.prepare_prototype_labels(semantic, pixel_clusters, LABEL_DIVISOR)

    memory = memory_labels = None
    if num_banks > 0:
        if memory_bank is None:
            raise ValueError('add_segsort_loss: num_banks > 0 needs a `memory_bank` (segsort.losses.MemoryBank '
                             'holding the memory variables)')
        memory, memory_labels = memory_bank.read()
    loss, prototypes = segment_loss(pixel_embedding, semantic, segment_ids, prototype_labels, concentration,
                                    memory, memory_labels)
    if memory_bank is not None and num_banks > 0:
        memory_bank.update(prototypes, prototype_labels)
    return tf.where(tf.size(semantic) > 0, loss, tf.zeros_like(loss))


def add_unsupervised_segsort_loss(embedding, concentration, cluster_labels, num_banks=0):
    """Unsupervised SegSort loss (aaf_segsort.md 7.4): softmax of every pixel over all segments of the batch.

    Args:
      embedding: float [B, h, w, D] raw network output.
      concentration: kappa.
      cluster_labels: int [B, h, w, 1] over-segmentation ids (0..255; no ignore: padding is a segment).
      num_banks: unused (the original accepts it and ignores it).
    Returns:
      scalar loss.
    """
    del num_banks
    embedding = clustering.normalize_embedding(tf.convert_to_tensor(embedding))
    batch_size = tf.shape(embedding)[0]
    clusters = tf.reshape(tf.cast(cluster_labels, tf.int32), [batch_size, -1])
    clusters = clusters + tf.range(batch_size)[:, tf.newaxis] * LABEL_DIVISOR
    _, segment_ids = tf.unique(tf.reshape(clusters, [-1]))
    flat = tf.reshape(embedding, [-1, tf.shape(embedding)[-1]])
    prototypes = clustering.calculate_prototypes_from_labels(flat, segment_ids)
    logits = tf.cast(concentration, flat.dtype) * tf.matmul(flat, prototypes, transpose_b=True)
    # -log softmax at the own segment; the same value as the original's -log(S_self / sum S).
    return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=segment_ids, logits=logits))
