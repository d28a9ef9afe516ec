"""SegSort losses: supervised segment sorting (k-means segments, NCA vMF likelihood) and the unsupervised variant.

`add_segsort_loss` and `add_unsupervised_segsort_loss` keep the names, argument order and values of
`network/segsort/train_utils.py`. How they are computed differs:
  * k-means runs for all images of the batch in one batched set of ops (`clustering.batch_kmeans_with_initial_labels`)
    instead of a Python loop that builds one graph per image;
  * the NCA likelihood is one fused op (`vmf_nca_loss`) whose gradient is written out: the [pixels x prototypes]
    similarity matrix is the only large tensor kept between the passes, instead of the several same-sized masks
    and products the original keeps for autodiff;
  * a batch without valid pixels gives loss 0 instead of NaN;
  * `impl` ('auto' | 'kernel' | 'tf'): on CPU, 'auto' runs the k-means and the NCA likelihood (forward and
    gradient) as the compiled C++ ops of `segsort.kernel` (blockwise, no [pixels x prototypes] tensor; same maths,
    float32); 'tf' is the TensorFlow path above (the test oracle, and what 'auto' uses on GPU, for float64, inside
    XLA, or when the kernel cannot be built).

Memory bank (aaf_segsort.md 7.3 step 5, quirk Q-S1): the original creates `num_banks` banks of 25*B random
prototypes labelled 0 whose update never runs. `MemoryBank(..., fifo=False)` (the default) reproduces that inert,
random, label-0 memory; `fifo=True` makes the intended first-in-first-out update actually happen.
"""
import tensorflow as tf

from segsort import clustering
from segsort import kernel as segsort_kernel

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

    Args:
      prototypes: float [S_b, D].
      labels: int [S_b] labels of the prototypes (any numbering; only equality matters).
      global_class: callable (block's distinct labels [C_b]) -> their compact classes [C_b] (called lazily, so
        that the local numbering does not wait for it).
      num_classes: C.
    """

    def __init__(self, prototypes, labels, global_class, num_classes, dtype):
        self.prototypes = prototypes
        self.classes, local_class = tf.unique(labels)
        self.num_local_classes = tf.size(self.classes)
        self.single_class = tf.equal(self.num_local_classes, 1)
        self.local_one_hot = tf.one_hot(local_class, self.num_local_classes, dtype=dtype)  # [S_b, C_b]
        self._global_class, self._num_classes, self._dtype = global_class, num_classes, dtype

    @property
    def to_global(self):
        return tf.one_hot(self._global_class(self.classes), self._num_classes, dtype=self._dtype)  # [C_b, C]


def vmf_nca_loss(embedding, prototypes, segment_ids, prototype_class, pixel_class, num_classes, concentration,
                 memory=None):
    """Mean NCA negative log-likelihood of the vMF mixture, with a hand-written gradient.

    For pixel i with segment s_i and class c_i, S_ij = exp(kappa e_i . mu_j):
    numerator_i = sum_{j != s_i, class j == c_i} S_ij if that is > 0 else S_{i,s_i};
    loss_i = -log(numerator_i / (numerator_i + sum_{class j != c_i} S_ij)).

    Args:
      embedding: float [N, D] unit rows.
      prototypes: float [S, D] unit rows of the batch's segments.
      segment_ids: int32 [N] row of each pixel's own segment in `prototypes`.
      prototype_class: int32 [S] compact class index (0..num_classes-1) of every prototype.
      pixel_class: int32 [N] compact class index of every pixel.
      num_classes: number of compact classes.
      concentration: kappa.
      memory: optional `_PrototypeBlock` of extra prototypes (a memory bank) in every sum; they get no gradient
        (variables outside the embedding's graph). Their similarities depend only on the embedding, so the graph
        computes them while the k-means of the batch's segments still runs.
    Returns:
      scalar float32; gradients flow to `embedding` and `prototypes`.
    """
    kappa = tf.cast(concentration, embedding.dtype)
    dtype = embedding.dtype

    @tf.custom_gradient
    def loss_fn(emb, protos):
        batch_block = _PrototypeBlock(protos, prototype_class, lambda classes: classes, num_classes, dtype)
        # kappa goes onto the [N, D] side of the matmul, not onto the [N, S] logits.
        scaled = emb * kappa
        sims = tf.exp(tf.matmul(scaled, protos, transpose_b=True))  # [N, S]
        # [N, C] class sums: per block over its own classes (exact 0/1 products and sums of zeros to go global).
        class_sums = tf.matmul(tf.matmul(sims, batch_block.local_one_hot), batch_block.to_global)
        if memory is not None:
            memory_sims = tf.exp(tf.matmul(scaled, memory.prototypes, transpose_b=True))  # [N, M]
            class_sums += tf.matmul(tf.matmul(memory_sims, memory.local_one_hot), memory.to_global)
            # One label in the whole bank (the inert memory): its gradient term is a row scaling of S_M M.
            memory_product = tf.cond(memory.single_class, lambda: tf.matmul(memory_sims, memory.prototypes),
                                     lambda: tf.zeros_like(emb))
        own_class = tf.one_hot(pixel_class, num_classes, on_value=True, off_value=False)
        zero = tf.zeros([], dtype)
        same = tf.reduce_sum(tf.where(own_class, class_sums, zero), axis=1)
        different = tf.reduce_sum(tf.where(own_class, zero, class_sums), axis=1)
        self_sims = tf.gather(sims, segment_ids, axis=1, batch_dims=1)
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
            # table[:, class_j] for every prototype j as small exact matmuls (faster than a gather along axis 1).
            local_table = tf.matmul(table, batch_block.to_global, transpose_b=True)  # [N, C_b]
            logits_grad = sims * tf.matmul(local_table, batch_block.local_one_hot, transpose_b=True)
            correction = tf.where(use_others, (inv_num - inv_den) * self_sims * scale, zero)
            # The correction touches one entry per row: apply it to the products, not to the [N, S] matrix.
            grad_emb = tf.matmul(logits_grad, protos) + correction[:, tf.newaxis] * tf.gather(protos, segment_ids)
            if memory is not None:
                memory_table = tf.matmul(table, memory.to_global, transpose_b=True)  # [N, C_M]
                grad_emb += tf.cond(
                    memory.single_class, lambda: memory_table[:, :1] * memory_product,
                    lambda: tf.matmul(memory_sims * tf.matmul(memory_table, memory.local_one_hot, transpose_b=True),
                                      memory.prototypes))
            # (E^T G)^T: a plain [D, N] x [N, S] product; oneDNN is much slower with G transposed.
            grad_protos = tf.transpose(tf.matmul(tf.transpose(emb), logits_grad)) + tf.math.unsorted_segment_sum(
                correction[:, tf.newaxis] * emb, segment_ids, tf.shape(protos)[0])
            return grad_emb, grad_protos

        return loss, grad

    return loss_fn(embedding, prototypes)


def segment_loss(embedding, semantic_labels, segment_ids, prototype_labels, concentration, memory=None,
                 memory_labels=None, impl='auto', normalize_rows=False):
    """The supervised vMF loss of given segments (`_calculate_vmf_loss` of the original, without the memory update).

    Args:
      embedding: float [N, D] unit rows of the valid pixels.
      semantic_labels: int [N] (not needed: a pixel's class is its segment's).
      segment_ids: int32 [N] segment of each pixel (0..S-1); with the kernel, -1 leaves a pixel out (so that
        `add_segsort_loss` passes the whole grid instead of gathering the valid pixels).
      prototype_labels: int32 [S] semantic label of each segment.
      concentration: kappa.
      memory, memory_labels: optional extra prototypes [M, D] (unit rows) and their labels [M].
      impl: 'auto' | 'kernel' | 'tf' (module docstring).
      normalize_rows: `embedding` holds raw rows: normalise them first (inside the kernel, with its gradient).
    Returns:
      (loss scalar, prototypes [S, D]; with the kernel the prototypes are an output without gradient).
    """
    del semantic_labels
    embedding = tf.convert_to_tensor(embedding)
    impl = segsort_kernel.resolve_impl(impl, embedding.dtype, embedding.shape[-1])
    if normalize_rows and impl != 'kernel':
        embedding = clustering.normalize_embedding(embedding)
    num_segments = tf.shape(prototype_labels)[0]
    all_labels = prototype_labels
    if memory is not None:
        memory_labels = tf.cast(memory_labels, prototype_labels.dtype)
        all_labels = tf.concat([prototype_labels, memory_labels], 0)
    classes, all_class = tf.unique(all_labels)
    prototype_class = all_class[:num_segments]
    if impl == 'kernel':
        if memory is None:
            memory, memory_class = tf.zeros([0, tf.shape(embedding)[1]], embedding.dtype), tf.zeros([0], tf.int32)
        else:
            memory, memory_class = tf.cast(memory, embedding.dtype), all_class[num_segments:]
        return segsort_kernel.nca_loss(embedding, segment_ids, prototype_class, memory, memory_class, concentration,
                                       normalize_embedding=normalize_rows)
    prototypes = clustering.calculate_prototypes_from_labels(embedding, segment_ids, num_segments)
    pixel_class = tf.gather(prototype_class, segment_ids)
    memory_block = None
    if memory is not None:
        # Compact class of each distinct memory label: its position in `classes`.
        def global_class(labels):
            return tf.argmax(tf.cast(tf.equal(labels[:, tf.newaxis], classes[tf.newaxis, :]), tf.int32), axis=1,
                             output_type=tf.int32)
        memory_block = _PrototypeBlock(tf.cast(memory, prototypes.dtype), memory_labels, global_class,
                                       tf.size(classes), prototypes.dtype)
    loss = vmf_nca_loss(embedding, prototypes, segment_ids, prototype_class, pixel_class, tf.size(classes),
                        concentration, memory_block)
    return loss, prototypes


def add_segsort_loss(embedding, labels, embedding_dim, ignore_label, concentration, cluster_labels, num_clusters,
                     kmeans_iterations, num_banks, loc_features, memory_bank=None, impl='auto'):
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
      impl: 'auto' | 'kernel' | 'tf': the compiled C++ k-means and NCA ops or the TensorFlow ones (module
        docstring); 'auto' = the kernel on CPU for float32 when it loads.
    Returns:
      scalar loss (0 when no pixel is valid).
    """
    embedding = tf.convert_to_tensor(embedding)
    impl = segsort_kernel.resolve_impl(impl, embedding.dtype, embedding_dim + 2)
    batch_size = tf.shape(embedding)[0]
    raw_embedding = tf.reshape(embedding, [batch_size, -1, embedding_dim])
    # The kernel ops normalise the embedding themselves (the NCA op differentiates through it).
    flat_embedding = raw_embedding if impl == 'kernel' else clustering.normalize_embedding(raw_embedding)
    labels = tf.reshape(tf.cast(labels, tf.int32), [batch_size, -1])
    clusters = tf.reshape(tf.cast(cluster_labels, tf.int32), [batch_size, -1])
    locations = tf.reshape(tf.cast(loc_features, embedding.dtype), [batch_size, -1, 2])
    valid = tf.not_equal(labels, ignore_label)

    if impl == 'kernel' and isinstance(num_clusters, int) and isinstance(kmeans_iterations, int):
        clusters = segsort_kernel.batch_kmeans(raw_embedding, clusters, num_clusters * num_clusters,
                                               kmeans_iterations, valid, locations, normalize_embedding=True)
    else:
        unit = clustering.normalize_embedding(raw_embedding) if impl == 'kernel' else flat_embedding
        with_location = clustering.normalize_embedding(tf.concat([unit, locations], 2))
        clusters = clustering.batch_kmeans_with_initial_labels(tf.stop_gradient(with_location), clusters,
                                                               num_clusters * num_clusters, kmeans_iterations, valid,
                                                               jit_compile=True)
    clusters = clusters + tf.range(tf.cast(batch_size, tf.int64), dtype=tf.int64)[:, tf.newaxis] * LABEL_DIVISOR

    # Valid pixels of all images in row-major order, as the original's per-image gathers concatenated.
    valid_index = tf.where(valid)
    semantic = tf.gather_nd(labels, valid_index)
    pixel_clusters = tf.gather_nd(clusters, valid_index)
    segment_ids, prototype_labels = clustering.prepare_prototype_labels(semantic, pixel_clusters, LABEL_DIVISOR)
    if impl == 'kernel':
        # The kernel takes the whole grid with segment -1 on ignored pixels: no gather of the embedding and no
        # scatter of its gradient.
        grid_ids = tf.scatter_nd(valid_index, segment_ids + 1, tf.shape(labels, out_type=tf.int64)) - 1
        pixel_embedding, segment_ids = tf.reshape(flat_embedding, [-1, embedding_dim]), tf.reshape(grid_ids, [-1])
    else:
        pixel_embedding = tf.gather_nd(flat_embedding, valid_index)

    memory = memory_labels = None
    if num_banks > 0:
        if memory_bank is None:
            raise ValueError('add_segsort_loss: num_banks > 0 needs a `memory_bank` (segsort.losses.MemoryBank '
                             'holding the memory variables)')
        memory, memory_labels = memory_bank.read()
    loss, prototypes = segment_loss(pixel_embedding, semantic, segment_ids, prototype_labels, concentration,
                                    memory, memory_labels, impl=impl, normalize_rows=impl == 'kernel')
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
