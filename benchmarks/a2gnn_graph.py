"""Per-image A2GNN training: our window graph (NeighbourGraph, blocked window attention) against a dense N x N
transcription of the original (`mytool.generate_aff` matrices, full-row softmax), in the same run.

Graph: 63 x 47 nodes (a 504 x 376 VOC image at stride 8), radius 3, 5632-d non-negative node features,
hidden 256, the others script's schedule (50 + 50 Adam steps: split CE, then + 0.3 gated CRF) unless --steps.
Each variant runs in its own process (tf.function steps for both). Memory, the ratio's figure: peak of
TensorFlow's CPU allocator during training minus its use just before (inputs and TensorFlow loaded;
`tf.config.experimental.get_memory_info('CPU:0')`), i.e. the tensors training allocates. Also printed: the growth
of the process's peak resident set size (includes the graph tracing and malloc's retained pages). The last line reads `sparse vs dense gnn: time ratio <r>x, peak memory ratio <m>x`.
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
    if graph_form == 'sparse':
        adj, cropping = neighbour_graph(aff, RADIUS), None
    else:
        adj = adjacency(generate_aff(F_H, F_W, aff, RADIUS))
        cropping = generate_aff_cropping(F_H, F_W, RADIUS)
    import tensorflow as tf
    x = tf.constant(x)  # the input features exist before training (the affinity net's output)
    tf.config.experimental.reset_memory_stats('CPU:0')
    tf_before = tf.config.experimental.get_memory_info('CPU:0')['current']
    before = _rss_mb()
    start = time.perf_counter()
    _, history = train_gnn(x, adj, seed, F_H, F_W, 'others', sample, epochs=epochs, aff_cropping=cropping,
                           log=lambda m: None)
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
