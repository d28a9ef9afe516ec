"""Sparse (stencil) vs dense (original) random walk of PSA's infer_aff, in the same run.

    python benchmarks/random_walk.py [--sizes 56,63] [--logt 8] [--beta 8] [--repeats 3]

For each feature grid (56x56 = a 448x448 image, 63x63 = 504x504) it builds the radius-5 pair affinities of random
piecewise-constant features, then times `random_walk(..., impl='dense')` (the [N, N] transition matrix squared
logt times, float32) against `impl='sparse'` (the CAMs propagated 2^logt times through the 69-point stencil, XLA).
Times are medians of --repeats runs after one warm-up run (XLA compilation excluded; reported separately).

Memory: each implementation runs in its own fresh child process; the figure is the growth of the process's peak
resident set size (getrusage ru_maxrss) from just before the first walk call to its end, so it counts every
buffer the walk allocates (and, for the sparse walk, XLA's compilation). Inputs are built before the baseline.

Accuracy: both results are compared with a float64 NumPy reference of the same walk (stencil form); the labels
must be identical.
Last line: `sparse vs dense walk: time ratio <r>x, peak memory ratio <m>x` (dense / sparse, at the largest grid).
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def make_inputs(side, seed=0, num_classes=3):
    rng = np.random.default_rng(seed)
    blocks = rng.normal(size=[1, side // 8 + 1, side // 8 + 1, 32])
    features = np.repeat(np.repeat(blocks, 8, 1), 8, 2)[:, :side, :side]
    features = (features + 0.1 * rng.normal(size=features.shape)).astype(np.float32)
    cam = rng.uniform(size=[side * 8, side * 8, num_classes]).astype(np.float32) ** 3
    return features, np.array([1, 6, 14][:num_classes]), cam


def reference_walk(aff_sparse, cam_pooled, side, beta, logt):
    """float64 NumPy walk (stencil form) of the same transition matrix."""
    from affinitynet import random_walk as rw
    weights = np.asarray(rw.stencil_weights_from_sparse(aff_sparse, (side, side)), np.float64) ** beta
    weights /= weights.sum(-1, keepdims=True)
    cam = cam_pooled.astype(np.float64)
    offsets = rw.offsets(5)
    for _ in range(2 ** logt):
        padded = np.pad(cam, ((4, 4), (4, 4), (0, 0)))
        cam = sum(padded[4 + dy:4 + dy + side, 4 + dx:4 + dx + side] * weights[..., k:k + 1]
                  for k, (dy, dx) in enumerate(offsets))
    return cam


def child(impl, side, beta, logt, repeats):
    """Runs in a fresh process; prints a JSON line with times, memory and the result."""
    import tensorflow as tf
    from affinitynet import random_walk as rw
    from affinitynet.affinity import affinity_from_features, sparse_to_dense
    features, keys, cam = make_inputs(side)
    aff = affinity_from_features(features, 5)
    if impl == 'dense':
        aff = sparse_to_dense(aff[0], 5, (side, side)).numpy()
    else:
        aff = aff.numpy()
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    result = rw.random_walk(aff, keys, cam, 16, beta, logt, impl=impl)
    first = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        rw.random_walk(aff, keys, cam, 16, beta, logt, impl=impl)
        times.append(time.perf_counter() - start)
    out = {'time': float(np.median(times)), 'first': first, 'memory_mb': (peak - base) / 1024.0}
    np.save(os.environ['RW_BENCH_OUT'], {'lowres': result['cam_rw_lowres'][0], 'label': result['label'],
                                        'cam_pooled': result['cam_pooled']}, allow_pickle=True)
    print('RESULT ' + json.dumps(out), flush=True)


def run_child(impl, side, beta, logt, repeats, tmp):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2', RW_BENCH_OUT=os.path.join(tmp, f'{impl}_{side}.npy'))
    proc = subprocess.run([sys.executable, __file__, '--child', impl, '--sizes', str(side), '--beta', str(beta),
                           '--logt', str(logt), '--repeats', str(repeats)], env=env, capture_output=True, text=True)
    lines = [l for l in proc.stdout.splitlines() if l.startswith('RESULT ')]
    if proc.returncode or not lines:
        raise RuntimeError(f'{impl} walk at {side}x{side} failed:\n{proc.stderr[-3000:]}')
    return json.loads(lines[-1][7:]), np.load(env['RW_BENCH_OUT'], allow_pickle=True).item()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument('--sizes', default='56,63')
    parser.add_argument('--logt', type=int, default=8)
    parser.add_argument('--beta', type=int, default=8)
    parser.add_argument('--repeats', type=int, default=3)
    parser.add_argument('--child', default=None)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(',')]
    if args.child:
        child(args.child, sizes[0], args.beta, args.logt, args.repeats)
        return
    import tempfile
    from affinitynet.affinity import affinity_from_features
    print(f'random walk, logt {args.logt} ({2 ** args.logt} steps), beta {args.beta}, radius 5, 3 classes + bg; '
          f'{os.cpu_count()} CPUs')
    print('| grid | dense time | sparse time | speed-up | dense peak mem | sparse peak mem | ratio | '
          'max rel. err. vs f64 (dense / sparse) | labels equal |')
    print('|---|---|---|---|---|---|---|---|---|')
    with tempfile.TemporaryDirectory() as tmp:
        for side in sizes:
            dense, dense_out = run_child('dense', side, args.beta, args.logt, args.repeats, tmp)
            sparse, sparse_out = run_child('sparse', side, args.beta, args.logt, args.repeats, tmp)
            features, _, _ = make_inputs(side)
            ref = reference_walk(affinity_from_features(features, 5).numpy(), dense_out['cam_pooled'], side,
                                 args.beta, args.logt)
            scale = np.abs(ref).max()
            err_d = np.abs(dense_out['lowres'] - ref).max() / scale
            err_s = np.abs(sparse_out['lowres'] - ref).max() / scale
            # labels may differ only at near-ties: pixels whose top-2 gap in the float64 reference is below the
            # float32 error of the dense walk
            import tensorflow as tf
            up = tf.image.resize(ref[None], [side * 8, side * 8], method='bilinear').numpy()[0]
            top2 = np.sort(up, -1)[..., -2:]
            tie = (top2[..., 1] - top2[..., 0]) < 2 * np.abs(dense_out['lowres'] - ref).max()
            differ = dense_out['label'] != sparse_out['label']
            equal = f'{bool(not differ.any())} ({int(differ.sum())} differ, {int((differ & ~tie).sum())} not near-ties)'
            time_ratio = dense['time'] / sparse['time']
            mem_ratio = dense['memory_mb'] / max(sparse['memory_mb'], 1e-9)
            print(f'| {side}x{side} | {dense["time"] * 1e3:.0f} ms | {sparse["time"] * 1e3:.0f} ms '
                  f'(+{sparse["first"] - sparse["time"]:.1f} s compile) | {time_ratio:.1f}x | '
                  f'{dense["memory_mb"]:.0f} MB | {sparse["memory_mb"]:.0f} MB | {mem_ratio:.1f}x | '
                  f'{err_d:.1e} / {err_s:.1e} | {equal} |', flush=True)
    print(f'sparse vs dense walk: time ratio {time_ratio:.1f}x, peak memory ratio {mem_ratio:.1f}x')


if __name__ == '__main__':
    main()
