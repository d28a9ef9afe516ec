"""The affinity-attention GNN of A2GNN (`pygcn/A2GNN.py`).

H = dropout(ReLU(X W_e)); three attention layers H <- softmax_row(beta * cos(H) + mask + 10 * adj) H, each with
its own trainable scalar beta ~ U(0, 1); logits = H W_o. The attention mask is -1e9 outside each node's square
window (and where the cosine is negative, which never happens for the non-negative H).

Two graph forms give the same numbers: the original's dense [N, N] `adj` and window mask, or a
`a2gnn.graph.NeighbourGraph`, which computes only the (2r+1)^2 window entries of each row (the default of the
per-image trainer; see benchmarks/a2gnn_graph.py).
"""
import numpy as np
import tensorflow as tf

from a2gnn.graph import NeighbourGraph
from common.models.naming import set_original_name

MASK_VALUE = -1e9


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


def window_attention(h, beta, graph):
    """The same layer on a NeighbourGraph: only the window entries of each row (all others get zero weight in
    the dense softmax: exp(-1e9 - max) underflows to 0). The neighbours are gathered ([N, K, F]) and the layer is
    recomputed in the backward pass, so only its input is kept between passes."""
    num_nodes = graph.f_h * graph.f_w
    index = tf.constant(graph.index)
    valid = tf.constant(graph.valid.reshape(num_nodes, -1))
    adj = tf.constant(graph.adj.reshape(num_nodes, -1))

    @tf.recompute_grad
    def layer(h, beta):
        padded = tf.concat([h, tf.zeros_like(h[:1])], axis=0)  # row N: the out-of-grid neighbour
        neighbours = tf.gather(padded, index)  # [N, K, F]
        norm = tf.norm(padded, axis=1)
        dot = tf.einsum('nf,nkf->nk', h, neighbours)
        cos = dot / (norm[:num_nodes, None] * tf.gather(norm, index) + 1e-7)
        allowed = tf.logical_and(valid, cos >= 0)
        weights = tf.nn.softmax(tf.where(allowed, beta * cos + 10.0 * adj, MASK_VALUE), axis=-1)
        return tf.einsum('nk,nkf->nf', weights, neighbours)

    return layer(h, beta)


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
        h = tf.nn.relu(tf.matmul(tf.convert_to_tensor(x, tf.float32), self.embedding))
        if training and self.dropout_rate > 0:
            keep = self._dropout_seed.uniform(tf.shape(h)) >= self.dropout_rate
            h = tf.where(keep, h / (1.0 - self.dropout_rate), 0.0)
        sparse = isinstance(adj, NeighbourGraph)
        if not sparse:
            if aff_cropping is None:
                raise ValueError('a dense adjacency needs the window mask aff_cropping')
            adj = tf.convert_to_tensor(adj, tf.float32)
            aff_cropping = tf.convert_to_tensor(aff_cropping, tf.float32)
        for beta in self.betas:
            h = window_attention(h, beta[0], adj) if sparse else dense_attention(h, beta[0], adj, aff_cropping)
        return tf.matmul(h, self.output_weight), h
