"""Speed / peak-memory benchmark: fused AAF loss (XLA) vs the literal TF2 transcription of the original.

Both variants compute the full AAF term of train_aaf.py (softmax of the logits, sizes 1-3, 6 means, decay) and
its gradient w.r.t. the logits and the two adversarial variables, via `aaf.losses.aaf_loss_terms`:
* original: `fused=False` (pad / slice / concat to [N,H,W,C,8], boolean masks, tf.where + gather), run as a
  `tf.function` graph like the TF1 session;
* fused: `fused=True` (stencil op with analytic gradient), `tf.function(jit_compile=True)`.

Method. Each (variant, shape) runs in its own subprocess so allocations of one cannot hide in the other's
high-water mark. Time: after 2 warm-up calls (the first one traces/compiles), the median wall time of several
forward+backward calls (results fetched to NumPy, so the work has finished). Peak memory: TensorFlow's CPU
allocator has no statistics (`tf.config.experimental.get_memory_info('CPU:0')` raises) and tracemalloc does not
see TF's allocations, so after warm-up the process resets its resident-set high-water mark (write "5" to
/proc/self/clear_refs), records VmRSS, runs the timed calls and reads VmHWM from /proc/self/status; the peak
memory of a call is VmHWM - VmRSS(baseline). Where clear_refs is not writable, ru_maxrss minus the RSS after
warm-up is used (an upper bound that includes the compile peak).

Prints one line per measurement and ends with
`fused vs original: time ratio <r1>x, peak memory ratio <r2>x` (original / fused, at the larger shape).

Run: python -m benchmarks.aaf_loss [--shapes 8,42,42,21 16,60,60,21] [--repeats 5]
"""
import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

DEFAULT_SHAPES = ('8,42,42,21', '16,60,60,21')


def _status_kb(field):
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith(field + ':'):
                return int(line.split()[1])
    raise RuntimeError(f'{field} not found in /proc/self/status')


def _measure(variant, shape, repeats):
    """Runs in the child process: returns dict(time_ms, peak_mb, loss)."""
    os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
    import numpy as np
    import tensorflow as tf
    from aaf.losses import AdaptiveAffinityWeights, aaf_loss_terms

    n, h, w, c = shape
    rng = np.random.default_rng(0)
    logits = tf.constant(rng.normal(size=(n, h, w, c)).astype(np.float32) * 2.0)
    # Blocky labels (so there are edges and non-edges) with some ignored pixels.
    coarse = rng.integers(0, c, size=(n, (h + 5) // 6, (w + 5) // 6))
    labels = np.repeat(np.repeat(coarse, 6, axis=1), 6, axis=2)[:, :h, :w]
    labels = np.where(rng.random(labels.shape) < 0.05, 255, labels).astype(np.uint8)[..., None]
    labels = tf.constant(labels)
    weights = AdaptiveAffinityWeights(c)
    fused = variant == 'fused'

    def step(logits, labels):
        with tf.GradientTape() as tape:
            tape.watch(logits)
            loss = aaf_loss_terms(logits, labels, c, step=10, num_steps=100, mode='aaf', weights=weights,
                                  fused=fused)['aaf_loss']
        grads = tape.gradient(loss, [logits, weights.edge_w, weights.nonedge_w])
        return loss, grads

    step = tf.function(step, jit_compile=fused)
    for _ in range(2):  # trace / compile
        loss, grads = step(logits, labels)
        _ = [g.numpy() for g in grads]
    try:
        with open('/proc/self/clear_refs', 'w') as f:
            f.write('5')
        method = 'VmHWM after clear_refs'
    except OSError:
        method = 'ru_maxrss (includes warm-up peak)'
    baseline_kb = _status_kb('VmRSS')
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        loss, grads = step(logits, labels)
        _ = [g.numpy() for g in grads]
        times.append(time.perf_counter() - start)
    if method.startswith('VmHWM'):
        peak_kb = _status_kb('VmHWM')
    else:
        peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {'time_ms': 1e3 * statistics.median(times), 'peak_mb': max(peak_kb - baseline_kb, 1) / 1024.0,
            'loss': float(loss), 'method': method}


def _run_child(variant, shape, repeats):
    cmd = [sys.executable, '-m', 'benchmarks.aaf_loss', '--child', variant, '--shapes', ','.join(map(str, shape)),
           '--repeats', str(repeats)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f'benchmark child {variant} {shape} failed:\n{out.stderr[-3000:]}')
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--shapes', nargs='+', default=list(DEFAULT_SHAPES), help='N,H,W,C per shape')
    parser.add_argument('--repeats', type=int, default=5, help='timed calls per variant (median reported)')
    parser.add_argument('--child', choices=('fused', 'original'), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    try:
        shapes = [tuple(int(v) for v in s.split(',')) for s in args.shapes]
        if any(len(s) != 4 for s in shapes):
            raise ValueError
    except ValueError:
        parser.error(f'--shapes: each shape must be N,H,W,C integers, got {args.shapes}')
    if args.child:
        print(json.dumps(_measure(args.child, shapes[0], args.repeats)))
        return
    results = {}
    for shape in shapes:
        for variant in ('original', 'fused'):
            r = _run_child(variant, shape, args.repeats)
            results[shape, variant] = r
            print(f'{variant:8s} {list(shape)}: {r["time_ms"]:8.1f} ms fwd+bwd (median of {args.repeats}), '
                  f'peak memory {r["peak_mb"]:8.1f} MB ({r["method"]}), loss {r["loss"]:.6f}', flush=True)
    largest = max(shapes, key=lambda s: s[0] * s[1] * s[2] * s[3])
    orig, fused = results[largest, 'original'], results[largest, 'fused']
    print(f'fused vs original: time ratio {orig["time_ms"] / fused["time_ms"]:.1f}x, '
          f'peak memory ratio {orig["peak_mb"] / fused["peak_mb"]:.1f}x')


if __name__ == '__main__':
    main()
