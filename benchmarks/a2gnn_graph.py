"""Per-image A2GNN training: our window graph (NeighbourGraph; the compiled window-attention and split
cross-entropy kernels of `a2gnn.gnn_kernel`) and step against a dense N x N transcription of the original's step,
in the same run.

Graph: 63 x 47 nodes (a 504 x 376 VOC image at stride 8), radius 3, 5632-d non-negative node features,
hidden 256, the others script's schedule (50 + 50 Adam steps: split CE, then + 0.3 gated CRF) unless --epochs.
Ours is `a2gnn.train.train_gnn`; the reference (`_dense_reference`) keeps the original's formulation: dense
attention on `mytool.generate_aff` matrices, the criterion run twice on the upsampled logits, the gated CRF
kernels rebuilt every step and the prediction unfolded, one tf.function per phase. Same initialisation, dropout
stream and optimiser (both apply TorchAdam's update through `a2gnn.train.compiled_update`, one XLA program that
updates slots and weights in place, so the optimiser's temporaries are not part of the difference), so both
print the same final loss. Each variant runs in its own process; time = the whole `train_gnn` call (tracing
included; our compiled ops are built, or found in the kernel cache, before it: once per installation). Memory, the ratio's figure: peak of TensorFlow's CPU allocator during training minus its use just
before (`tf.config.experimental.get_memory_info('CPU:0')`), i.e. the tensors training allocates (optimiser
slots, activations, temporaries, outputs): "peak beyond the shared inputs", the same convention for both
variants, since the node features (2961 x 5632 float32, 64 MiB) and the graph (dense: adjacency and window
mask, 2 x 33 MiB; ours: NeighbourGraph arrays) exist before training in both and are not counted. Buffers
TensorFlow adopts from NumPy without a copy (the model's initial weights, 5.5 MiB, when NumPy's buffer happens to
be 64-byte aligned) are invisible to the allocator in both variants, so the figure moves by a few MiB between
runs. Also printed: the growth of the process's peak resident set size (includes the graph tracing and malloc's
retained pages). The last line reads `sparse vs dense gnn: time ratio <r>x, peak memory ratio <m>x`.
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import time

F_H, F_W, RADIUS, NFEAT = 63, 47, 3, 5632


def _rss_mb():
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith('VmRSS:'):
                return int(line.split()[1]) / 1024.0
    return float('nan')


def _dense_reference(x, adj, cropping, seed, sample, epochs):
    """The original's per-image loop (`train_infer_A2GNN_others.py` with `mytool.train_with_nocrf` /
    `train_with_crf`), transcribed: dense [N, N] attention, the logits bilinearly upsampled to the seed and the
    criterion run twice (bg-only and fg-only seed), the gated CRF kernels rebuilt every step and the prediction
    unfolded to [1, H, W, C, d, d]. Same model initialisation, dropout stream and optimiser as `train_gnn`."""
    import tensorflow as tf
    from a2gnn.gated_crf import create_kernels, potts_loss_unfolded
    from a2gnn.losses import GATED_CRF_KERNELS, masked_cross_entropy, split_seed
    from a2gnn.model import A2GNN
    from a2gnn.train import CRF_WEIGHT_OTHERS, GATED_CRF_RADIUS, compiled_update
    from common.train.optimizers import TorchAdam
    model = A2GNN(NFEAT, 256, 21, 3, 0.5, seed=0)
    optimizer = TorchAdam(weight_decay=5e-4)
    optimizer.build(model.weights)
    update = compiled_update(optimizer, model.weights)  # the optimiser step of ours (in place, one XLA program)
    bg_label, fg_label = split_seed(tf.constant(seed))
    size = seed.shape[1:]
    history = []

    def step(with_crf):
        with tf.GradientTape() as tape:
            logits, _ = model(x, adj, cropping, training=True)
            pred = tf.image.resize(tf.reshape(logits, (1, F_H, F_W, -1)), size, 'bilinear')
            loss = masked_cross_entropy(pred, bg_label) + masked_cross_entropy(pred, fg_label)
            if with_crf:
                y = tf.nn.softmax(tf.reshape(logits, (1, F_H, F_W, -1)), axis=-1)
                kernels = create_kernels(list(GATED_CRF_KERNELS), GATED_CRF_RADIUS, sample, 1, F_H, F_W)
                loss += CRF_WEIGHT_OTHERS * potts_loss_unfolded(y, kernels, float(F_H * F_W))
        update(tape.gradient(loss, model.weights), 0.03)
        return loss

    for with_crf in (False, True):
        compiled = tf.function(lambda with_crf=with_crf: step(with_crf), autograph=False)
        for _ in range(epochs):
            history.append({'loss': float(compiled())})
    return history


def _worker(graph_form, epochs):
    import numpy as np
    from a2gnn.graph import adjacency, generate_aff, generate_aff_cropping, neighbour_graph
    from a2gnn.train import train_gnn
    rng = np.random.default_rng(0)
    x = np.abs(rng.normal(size=(F_H * F_W, NFEAT))).astype(np.float32)
    x /= x.sum(axis=1, keepdims=True)
    d = 2 * RADIUS + 1
    aff = np.exp(-np.abs(rng.normal(size=(F_H, F_W, d, d)))).astype(np.float32)
    seed = rng.choice([0, 3, 255], size=(1, 8 * F_H, 8 * F_W), p=[0.3, 0.2, 0.5]).astype(np.int64)
    sample = {'rgb': rng.normal(size=(1, F_H, F_W, 3)).astype(np.float32)}
    import tensorflow as tf
    # Inputs of training, in place before it starts in both variants (not counted): the node features (the
    # affinity net's output) and the graph (NeighbourGraph arrays; the dense adjacency and window mask).
    x = tf.constant(x)
    if graph_form == 'sparse':
        graph = neighbour_graph(aff, RADIUS)
        # The compiled ops are built once per installation (kernel cache), not per image: outside the timing.
        from a2gnn.gnn_kernel import load_kernel
        load_kernel()
    else:
        adj = tf.constant(adjacency(generate_aff(F_H, F_W, aff, RADIUS)))
        cropping = tf.constant(generate_aff_cropping(F_H, F_W, RADIUS))
    tf.config.experimental.reset_memory_stats('CPU:0')
    tf_before = tf.config.experimental.get_memory_info('CPU:0')['current']
    before = _rss_mb()
    start = time.perf_counter()
    if graph_form == 'sparse':
        _, history = train_gnn(x, graph, seed, F_H, F_W, 'others', sample, epochs=epochs, log=lambda m: None)
    else:
        history = _dense_reference(x, adj, cropping, seed, sample, epochs)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    tf_peak = (tf.config.experimental.get_memory_info('CPU:0')['peak'] - tf_before) / 2 ** 20
    print(json.dumps({'graph': graph_form, 'seconds': seconds, 'peak_mb': peak - before, 'tf_peak_mb': tf_peak,
                      'final_loss': history[-1]['loss']}))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--epochs', type=int, default=50, help='steps per phase (the original: 50)')
    parser.add_argument('--worker', choices=['sparse', 'dense'])
    args = parser.parse_args()
    if args.worker:
        _worker(args.worker, args.epochs)
        return
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2')
    results = {}
    for form in ('sparse', 'dense'):
        out = subprocess.run([sys.executable, __file__, '--worker', form, '--epochs', str(args.epochs)], env=env,
                             check=True, capture_output=True, text=True).stdout
        results[form] = json.loads(out.strip().splitlines()[-1])
        r = results[form]
        print(f'{form:6s}: {2 * args.epochs} steps in {r["seconds"]:.1f} s, training peak RSS '
              f'{r["peak_mb"]:.0f} MB, TF allocator peak {r["tf_peak_mb"]:.0f} MB, final loss {r["final_loss"]:.4f}')
    time_ratio = results['dense']['seconds'] / results['sparse']['seconds']
    memory_ratio = results['dense']['tf_peak_mb'] / results['sparse']['tf_peak_mb']
    print(f'graph {F_H}x{F_W} nodes, radius {RADIUS}, features {NFEAT}')
    print(f'sparse vs dense gnn: time ratio {time_ratio:.1f}x, peak memory ratio {memory_ratio:.1f}x')


if __name__ == '__main__':
    main()
