"""The affinity-attention GNN of A2GNN (`pygcn/A2GNN.py`).

H = dropout(ReLU(X W_e)); three attention layers H <- softmax_row(beta * cos(H) + mask + 10 * adj) H, each with
its own trainable scalar beta ~ U(0, 1); logits = H W_o. The attention mask is -1e9 outside each node's square
window (and where the cosine is negative, which never happens for the non-negative H).

Two graph forms give the same numbers: the original's dense [N, N] `adj` and window mask, or a
`a2gnn.graph.NeighbourGraph` (the default of the per-image trainer), whose attention reads only each node's
window: on CPU the compiled op of `a2gnn.gnn_kernel` (node by node), else a TensorFlow form that runs per 6 x 6
block of nodes against the block's (6+2r)^2 neighbourhood, masked to each node's window: two batched matmuls
instead of [N, N] ones (see benchmarks/a2gnn_graph.py).
"""
import numpy as np
import tensorflow as tf

from a2gnn.graph import NeighbourGraph
from a2gnn.gnn_kernel import resolve_impl, window_attention_kernel
from common.models.naming import set_original_name

MASK_VALUE = -1e9
TILE = 6  # query block side of window_attention's TensorFlow form (keys: (TILE + 2r)^2 per block)
CHUNK = 15  # query blocks the TensorFlow form processes at a time (more chunks: less memory, longer tracing)


def _xavier_uniform(rng, shape):
    limit = np.sqrt(6.0 / (shape[0] + shape[1]))
    return rng.uniform(-limit, limit, shape).astype(np.float32)


def dense_attention(h, beta, adj, aff_cropping):
    """One `GraphAttentionLayer.forward` on dense matrices: h [N, F], adj and aff_cropping [N, N]."""
    norm = tf.norm(h, axis=1, keepdims=True)
    cos = tf.matmul(h, h, transpose_b=True) / (tf.matmul(norm, norm, transpose_b=True) + 1e-7)
    masked_out = tf.logical_or(tf.equal(aff_cropping, 0.0), cos < 0)
    mask = tf.where(masked_out, MASK_VALUE, 0.0)
    scores = beta * cos + mask + 10.0 * adj
    return tf.matmul(tf.nn.softmax(scores, axis=1), h)


def _safe_norm(h):
    """Row L2 norm with a finite gradient at a zero row (tf.norm's is NaN there); same values."""
    squares = tf.reduce_sum(tf.square(h), axis=-1)
    positive = squares > 0
    return tf.where(positive, tf.sqrt(tf.where(positive, squares, 1.0)), 0.0)


def window_attention(h, beta, graph, tile=TILE, chunk=CHUNK, impl='auto'):
    """The same layer on a NeighbourGraph: only the window entries of each row get weight (all others get zero
    weight in the dense softmax: exp(-1e9 - max) underflows to 0).

    `impl`: 'kernel' is the compiled CPU op of `a2gnn.gnn_kernel` (each node against its own window, ~1/3 of
    the block form's arithmetic, one op per layer and direction); 'tf' the TensorFlow form below; 'auto' the
    kernel on CPU when it builds, else the TensorFlow form (one log line).

    TensorFlow form:
    The node grid is cut into tile x tile query blocks; each block attends densely to its (tile+2r)^2 key block
    (one batched matmul for the cosines, one for the weighted sum), masked to each node's own window by the
    precomputed `tile_layout`. Only [chunk, tile^2, (tile+2r)^2] scores and [chunk, (tile+2r)^2, F] key blocks
    exist at a time (chunks of `chunk` blocks run one after the other), instead of the dense form's [N, N]
    matrices or a gathered [N, K, F] neighbour tensor; the backward pass recomputes them chunk by chunk from the
    layer's input (one more forward of the layer, a fraction of the embedding's cost) and adds each chunk's
    query and key gradients into one [N, F] gradient in place, so a training step keeps only the [N, F] input
    of each layer.
    """
    if resolve_impl(impl) == 'kernel':
        return window_attention_kernel(h, beta, graph)
    layout = _layout_tensors(graph, tile)
    num_blocks = int(layout['query_index'].shape[0])
    chunks = [slice(start, min(start + chunk, num_blocks)) for start in range(0, num_blocks, chunk)]

    def gathered(h, part):
        return tf.gather(h, layout['query_index'][part]), tf.gather(h, layout['key_index'][part])

    @tf.custom_gradient
    def attend(h, beta):
        blocks, previous = [], []
        for part in chunks:
            with tf.control_dependencies(previous):  # one chunk after the other: bounded temporaries
                blocks.append(_attention_blocks(*gathered(h, part), beta, layout, part))
            previous = blocks[-1:]
        out = tf.reshape(tf.concat(blocks, axis=0), (-1, int(h.shape[-1])))

        def grad(upstream):
            grad_h, grad_beta, previous = tf.zeros_like(h), tf.zeros_like(beta), [upstream]
            for part in chunks:
                # Recompute only once the gradient arrives and the previous chunk is done: without the
                # dependencies the graph would run every recomputation during the forward pass.
                with tf.control_dependencies(previous):
                    queries, keys = gathered(h, part)
                    beta_again = tf.identity(beta)
                with tf.GradientTape() as tape:
                    tape.watch([queries, keys, beta_again])
                    block = _attention_blocks(queries, keys, beta_again, layout, part)
                # d out / d block: the query nodes' rows (0 for out-of-grid query slots).
                block_grad = tf.gather(upstream, layout['query_index'][part]) * layout['query_valid'][part]
                grad_queries, grad_keys, part_beta = tape.gradient(block, [queries, keys, beta_again],
                                                                   output_gradients=block_grad)
                # Scatter-adds into the running gradient (updated in place): no dense [N, F] per gather.
                grad_h = tf.tensor_scatter_nd_add(grad_h, layout['query_index'][part][..., None], grad_queries)
                grad_h = tf.tensor_scatter_nd_add(grad_h, layout['key_index'][part][..., None], grad_keys)
                grad_beta += part_beta
                previous = [grad_h, grad_beta]
            return grad_h, grad_beta

        return tf.gather(out, layout['node_slot']), grad

    return attend(tf.convert_to_tensor(h, tf.float32), tf.convert_to_tensor(beta, tf.float32))


def _layout_tensors(graph, tile):
    """`tile_layout` as tensors, built once per graph and tile outside any tf.function being traced: a step
    function captures them instead of embedding the arrays as graph constants in every chunk (slow to trace).

    Out-of-grid query and key slots point at the last node instead of one past it, so the layer gathers from
    its input without a zero row appended: such keys are never allowed (weight exactly 0, zero gradient) and
    such query rows are dropped, so the borrowed values never reach an output or a gradient."""
    cache = graph.__dict__.setdefault('_layout_tensors', {})
    if tile not in cache:
        layout = tile_layout(graph, tile)
        last = graph.num_nodes - 1
        layout['query_valid'] = (layout['query_index'] <= last).astype(np.float32)[..., None]
        for key in ('query_index', 'key_index'):
            layout[key] = np.minimum(layout[key], last)
        with tf.init_scope():
            cache[tile] = {key: tf.constant(value) for key, value in layout.items()}
    return cache[tile]


def _attention_blocks(queries, keys, beta, layout, part):
    """Attention outputs [blocks, t*t, F] of the query blocks `part` (a slice) of `tile_layout`, from the gathered
    queries [blocks, t*t, F] and keys [blocks, s*s, F]."""
    denominator = _safe_norm(queries)[:, :, None] * _safe_norm(keys)[:, None, :] + 1e-7
    cos = tf.matmul(queries, keys, transpose_b=True) / denominator
    allowed = tf.logical_and(layout['allowed'][part], cos >= 0)
    weights = tf.nn.softmax(tf.where(allowed, beta * cos + 10.0 * layout['adj'][part], MASK_VALUE), axis=-1)
    return tf.matmul(weights, keys)


def tile_layout(graph, tile=TILE):
    """Index and mask arrays of `window_attention` for a NeighbourGraph (NumPy, built once per trace).

    Returns:
      dict query_index int32 [T, t*t] and key_index int32 [T, s*s] (s = t + 2r; N where outside the grid),
      allowed bool and adj float32 [T, t*t, s*s] (key in the query's window and both in the grid; the window
      adjacency there), node_slot int32 [N] (row of each node in the flattened [T*t*t] query rows).
    """
    f_h, f_w, r = graph.f_h, graph.f_w, graph.radius
    n, d, s = f_h * f_w, 2 * r + 1, tile + 2 * r
    tiles_y, tiles_x = -(-f_h // tile), -(-f_w // tile)
    ty, tx, a, b = np.meshgrid(np.arange(tiles_y), np.arange(tiles_x), np.arange(tile), np.arange(tile),
                               indexing='ij')
    qy, qx = ty * tile + a, tx * tile + b  # [Ty, Tx, t, t]
    q_in = (qy < f_h) & (qx < f_w)
    ty, tx, c, e = np.meshgrid(np.arange(tiles_y), np.arange(tiles_x), np.arange(s), np.arange(s), indexing='ij')
    ky, kx = ty * tile + c - r, tx * tile + e - r  # [Ty, Tx, s, s]
    k_in = (ky >= 0) & (ky < f_h) & (kx >= 0) & (kx < f_w)
    query_index = np.where(q_in, qy * f_w + qx, n).reshape(tiles_y * tiles_x, tile * tile)
    key_index = np.where(k_in, ky * f_w + kx, n).reshape(tiles_y * tiles_x, s * s)
    # Offset of key (c, e) from query (a, b) inside a tile pair: the same for every tile.
    dy = (np.arange(s)[None, :] - r) - np.arange(tile)[:, None]  # [t(a), s(c)]
    dx = dy
    in_window = ((np.abs(dy) <= r)[:, None, :, None] & (np.abs(dx) <= r)[None, :, None, :])  # [t, t, s, s]
    slot = ((np.clip(dy, -r, r) + r)[:, None, :, None] * d + (np.clip(dx, -r, r) + r)[None, :, None, :])
    qyc, qxc = np.minimum(qy, f_h - 1), np.minimum(qx, f_w - 1)
    slot_valid = graph.valid[qyc[..., None, None], qxc[..., None, None], slot]  # [Ty, Tx, t, t, s, s]
    slot_adj = graph.adj[qyc[..., None, None], qxc[..., None, None], slot]
    allowed = in_window & slot_valid & q_in[..., None, None]
    shape = (tiles_y * tiles_x, tile * tile, s * s)
    node_slot = np.empty(n, np.int32)
    flat_query = query_index.reshape(-1)
    node_slot[flat_query[flat_query < n]] = np.nonzero(flat_query < n)[0]
    return {'query_index': query_index.astype(np.int32), 'key_index': key_index.astype(np.int32),
            'allowed': allowed.reshape(shape), 'adj': np.where(allowed, slot_adj, 0.0).astype(np.float32).reshape(shape),
            'node_slot': node_slot}


def _relu_dropout(pre, keep, rate):
    """where(keep, relu(pre) / (1 - rate), 0) whose gradient keeps only the [N, F] bool mask of the active units
    (op by op, the relu output and the scaled copy stay alive until the backward pass)."""
    active = tf.logical_and(keep, pre > 0)

    @tf.custom_gradient
    def apply(pre):
        def grad(upstream):
            return tf.where(active, upstream / (1.0 - rate), 0.0)
        return tf.where(active, pre / (1.0 - rate), 0.0), grad

    return apply(pre)


class A2GNN(tf.Module):
    """`A2GNN(nfeat, nhid, nclass, nlayers, dropout_rate)`; variables carry the original PyTorch names
    (embeddinglayer.weight [nfeat, nhid], attentionlayers.<i>.beta [1], outputlayer.weight [nhid, nclass]).

    Call: model(x, adj, aff_cropping=None, training=False) -> (logits [N, nclass], fts [N, nhid]), where adj is
    a dense [N, N] matrix (then aff_cropping, the [N, N] window mask, is required) or a NeighbourGraph.
    """

    def __init__(self, nfeat, nhid, nclass, nlayers, dropout_rate, seed=None, name='A2GNN'):
        super().__init__(name=name)
        rng = np.random.default_rng(seed)
        self.nlayers, self.dropout_rate = nlayers, dropout_rate
        self.embedding = tf.Variable(_xavier_uniform(rng, (nfeat, nhid)), name='embeddinglayer_weight')
        set_original_name(self.embedding, 'embeddinglayer.weight')
        self.betas = []
        for i in range(nlayers):
            beta = tf.Variable(rng.uniform(0, 1, (1,)).astype(np.float32), name=f'attentionlayers_{i}_beta')
            set_original_name(beta, f'attentionlayers.{i}.beta')
            self.betas.append(beta)
        self.output_weight = tf.Variable(_xavier_uniform(rng, (nhid, nclass)), name='outputlayer_weight')
        set_original_name(self.output_weight, 'outputlayer.weight')
        self._dropout_seed = tf.random.Generator.from_seed(0 if seed is None else int(seed))

    @property
    def weights(self):
        return [self.embedding, *self.betas, self.output_weight]

    def __call__(self, x, adj, aff_cropping=None, training=False):
        h = tf.matmul(tf.convert_to_tensor(x, tf.float32), self.embedding)
        if training and self.dropout_rate > 0:
            keep = self._dropout_seed.uniform(tf.shape(h)) >= self.dropout_rate
            h = _relu_dropout(h, keep, self.dropout_rate)
        else:
            h = tf.nn.relu(h)
        sparse = isinstance(adj, NeighbourGraph)
        if not sparse:
            if aff_cropping is None:
                raise ValueError('a dense adjacency needs the window mask aff_cropping')
            adj = tf.convert_to_tensor(adj, tf.float32)
            aff_cropping = tf.convert_to_tensor(aff_cropping, tf.float32)
        for beta in self.betas:
            h = window_attention(h, beta[0], adj) if sparse else dense_attention(h, beta[0], adj, aff_cropping)
        return tf.matmul(h, self.output_weight), h
