"""A2GNN's per-image graph: node features, the square-window affinity graph and its window mask.

The originals build dense [N, N] matrices with O(N) Python loops (`mytool.generate_aff`,
`generate_aff_cropping`); here the dense forms are built vectorised (for parity and for the dense reference), and
`NeighbourGraph` keeps only the (2r+1)^2 window of every node, which is all the GNN ever reads: the dense matrices
are zero (adjacency) and -1e9-masked (attention) outside it.
"""
import dataclasses

import numpy as np
import tensorflow as tf

from a2gnn.ops import window_offsets


def node_features(features):
    """Row-major node features, each row divided by its sum (L1 normalisation of non-negative features).

    Args:
      features: [1, f_h, f_w, C] or [f_h, f_w, C] non-negative features (concatenated conv4/5/6).
    Returns:
      float32 [f_h*f_w, C]. A node whose features are all zero stays zero (the original divides 0 by 0 -> NaN).
    """
    features = tf.convert_to_tensor(features, tf.float32)
    x = tf.reshape(features, (-1, int(features.shape[-1])))
    total = tf.reduce_sum(x, axis=1, keepdims=True)
    return x / tf.where(tf.equal(total, 0.0), tf.ones_like(total), total)


def _window_pairs(f_h, f_w, radius):
    """(rows, cols, slots, valid): for node p = y*f_w + x and window slot k, the neighbour index q."""
    ys, xs = np.meshgrid(np.arange(f_h), np.arange(f_w), indexing='ij')
    offsets = np.array(window_offsets(radius))  # [K, 2]
    ny = ys[..., None] + offsets[:, 0]
    nx = xs[..., None] + offsets[:, 1]
    valid = (ny >= 0) & (ny < f_h) & (nx >= 0) & (nx < f_w)  # [f_h, f_w, K]
    rows = np.broadcast_to((ys * f_w + xs)[..., None], valid.shape)
    cols = ny * f_w + nx
    return rows, cols, valid


def generate_aff(f_h, f_w, aff, radius):
    """Dense node affinity `mytool.generate_aff`: A[p, q] = aff[y, x, ky, kx] for q = (y+ky-r, x+kx-r) inside the
    grid, 0 elsewhere.

    Args:
      f_h, f_w: grid size; aff: [f_h, f_w, d, d] (or [1, f_h, f_w, d, d]) head affinities; radius: r.
    Returns:
      float32 NumPy [f_h*f_w, f_h*f_w].
    """
    aff = np.asarray(aff, np.float32).reshape(f_h, f_w, -1)
    rows, cols, valid = _window_pairs(f_h, f_w, radius)
    dense = np.zeros((f_h * f_w, f_h * f_w), np.float32)
    dense[rows[valid], cols[valid]] = aff[valid]
    return dense


def generate_aff_cropping(f_h, f_w, radius):
    """`mytool.generate_aff_cropping`: float32 [N, N], 1 where q is in p's square window (p included), else 0."""
    rows, cols, valid = _window_pairs(f_h, f_w, radius)
    mask = np.zeros((f_h * f_w, f_h * f_w), np.float32)
    mask[rows[valid], cols[valid]] = 1.0
    return mask


def adjacency(aff_dense):
    """The scripts' adj = A - diag(A) + I (the head's self-affinity is exp(0) = 1 already)."""
    aff_dense = np.array(aff_dense, np.float32)
    np.fill_diagonal(aff_dense, 1.0)
    return aff_dense


@dataclasses.dataclass
class NeighbourGraph:
    """Square-window graph of a f_h x f_w node grid, stored per node and window slot.

    Attributes:
      f_h, f_w, radius: grid and window.
      adj: float32 [f_h, f_w, K] adjacency to each window neighbour (K = (2r+1)^2, slot order of
        `window_offsets`): the head affinity, 1 for the node itself, 0 out of bounds.
      valid: bool [f_h, f_w, K], False where the neighbour is outside the grid.
      index: int32 [f_h*f_w, K] neighbour node index (f_h*f_w, one past the last node, where not valid).
    """
    f_h: int
    f_w: int
    radius: int
    adj: np.ndarray
    valid: np.ndarray
    index: np.ndarray = None

    @property
    def num_nodes(self):
        return self.f_h * self.f_w

    def to_dense(self):
        """(adj, aff_cropping) as the dense [N, N] matrices the original GNN takes."""
        rows, cols, valid = _window_pairs(self.f_h, self.f_w, self.radius)
        adj = np.zeros((self.num_nodes, self.num_nodes), np.float32)
        adj[rows[valid], cols[valid]] = self.adj[valid]
        return adj, generate_aff_cropping(self.f_h, self.f_w, self.radius)


def neighbour_index(graph):
    """int32 [N, K] neighbour node of every window slot of a NeighbourGraph (N where there is none): its `index`,
    or built from the grid and `valid` when the graph was made without one."""
    if graph.index is not None:
        return np.asarray(graph.index, np.int32)
    _, cols, _ = _window_pairs(graph.f_h, graph.f_w, graph.radius)
    k = cols.shape[-1]
    return np.where(graph.valid, cols, graph.num_nodes).reshape(graph.num_nodes, k).astype(np.int32)


def neighbour_graph(aff, radius):
    """The sparse counterpart of adjacency(generate_aff(...)) and generate_aff_cropping(...).

    Args:
      aff: [f_h, f_w, d, d] (or [1, f_h, f_w, d, d]) head affinities.
    Returns:
      NeighbourGraph.
    """
    aff = np.asarray(aff, np.float32)
    d = 2 * radius + 1
    aff = aff.reshape(aff.shape[-4], aff.shape[-3], d * d)
    f_h, f_w = aff.shape[:2]
    _, _, valid = _window_pairs(f_h, f_w, radius)
    adj = np.where(valid, aff, 0.0).astype(np.float32)
    adj[:, :, radius * d + radius] = 1.0
    _, cols, _ = _window_pairs(f_h, f_w, radius)
    index = np.where(valid, cols, f_h * f_w).reshape(f_h * f_w, d * d).astype(np.int32)
    return NeighbourGraph(f_h, f_w, radius, adj, valid, index)
