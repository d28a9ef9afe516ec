"""Speed / peak-memory benchmark of the AAF loss: literal original vs XLA fused op vs compiled C++ kernel.

Every variant computes the full AAF term of train_aaf.py (softmax of the logits, sizes 1-3, 6 means, decay) and
its gradient w.r.t. the logits and the two adversarial variables, via `aaf.losses.aaf_loss_terms(impl=...)`:
* original: impl='reference' (pad / slice / concat to [N,H,W,C,8], boolean masks, tf.where + gather), run as a
  `tf.function` graph like the TF1 session;
* xla: impl='xla' (stencil op with analytic gradient), `tf.function(jit_compile=True)`;
* kernel: impl='kernel' (common/ops/kernels/affinity_field.cc), `tf.function`.
"fused" in the last line is the implementation training uses by default (`impl='auto'` resolved here: the
kernel on CPU, the XLA op where the kernel is unavailable).

Method. Each (variant, shape) runs in its own subprocess so allocations of one cannot hide in the other's
high-water mark. Time: after 2 warm-up calls (the first one traces/compiles), the median wall time of the timed
forward+backward calls (results fetched to NumPy, so the work has finished): at least --repeats calls, and more
until --min-seconds have passed (at most 200), so that the fast variants' medians rest on dozens of calls. As
`timeit` does, Python's garbage collector is disabled during the timed calls (a collection pass would land in
whichever call it happens to interrupt); it is re-enabled afterwards. Peak memory: TensorFlow's CPU
allocator keeps no statistics and glibc keeps freed blocks, so the children run with the allocator returning
freed memory to the system (MALLOC_MMAP_THRESHOLD_=65536: every block >= 64 KiB is its own mapping, unmapped on
free; TF_ENABLE_ONEDNN_OPTS=0: no oneDNN scratch caches). After warm-up a child resets its resident-set
high-water mark (writes "5" to /proc/self/clear_refs), records VmRSS, runs the timed calls and reads VmHWM; a
call's peak is VmHWM - VmRSS(baseline): every byte the step touched beyond what was resident before it. A
reading of 0 MB means the instrument failed and raises. XLA's compiled function keeps its preallocated
temporary buffer between calls, which the resident-set reading cannot see; for the XLA variant the peak is
therefore read from XLA's own buffer assignment (XLA_FLAGS=--xla_dump_to, "Total bytes used" minus the
parameter buffers = temporaries + outputs of the compiled step), and the larger of the two readings is reported.
Likewise the C++ kernel keeps its per-thread band buffers, padded label maps and gradient planes between calls; its
peak is the RSS reading plus the bytes it reports holding (`common.ops.affinity_kernel.cached_bytes()`).
The machine's load average is printed: on a shared machine the times are upper bounds.

Prints one line per measurement and ends with
`fused vs original: time ratio <r1>x, peak memory ratio <r2>x` (original / fused, at the larger shape).

Run: python -m benchmarks.aaf_loss [--shapes 8,42,42,21 16,60,60,21] [--repeats 5] [--min-seconds 3]
[--variants ...]
"""
import argparse
import gc
import glob
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

DEFAULT_SHAPES = ('8,42,42,21', '16,60,60,21')
VARIANTS = {'original': ('reference', False), 'xla': ('xla', True), 'kernel': ('kernel', False)}
CHILD_ENV = {'TF_ENABLE_ONEDNN_OPTS': '0', 'MALLOC_MMAP_THRESHOLD_': '65536', 'TF_CPP_MIN_LOG_LEVEL': '2'}
MAX_REPEATS = 200
MEMORY_METHOD = ('RSS = VmHWM - VmRSS after clear_refs with MALLOC_MMAP_THRESHOLD_=65536 TF_ENABLE_ONEDNN_OPTS=0; '
                 'XLA = larger of RSS and XLA buffer assignment (temporaries + outputs); kernel = RSS + the buffers it '
                 'keeps between calls')


def _status_kb(field):
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith(field + ':'):
                return int(line.split()[1])
    raise RuntimeError(f'{field} not found in /proc/self/status')


def _xla_buffer_bytes(dump_dir):
    """Temporaries + outputs of the largest compiled module in an XLA dump: 'Total bytes used' minus the
    parameter allocations (the inputs, resident before the call)."""
    best = 0
    for path in glob.glob(os.path.join(dump_dir, '*cpu_after_optimizations-buffer-assignment.txt')):
        with open(path) as f:
            text = f.read()
        total = re.search(r'Total bytes used: (\d+)', text)
        if not total:
            continue
        params = sum(int(m) for m in re.findall(r'^allocation \d+: size (\d+), parameter', text, re.M))
        best = max(best, int(total.group(1)) - params)
    if best <= 0:
        raise RuntimeError(f'no XLA buffer assignment found in {dump_dir}: the XLA memory instrument is broken')
    return best


def _measure(variant, shape, repeats, min_seconds=0.0):
    """Runs in the child process: returns dict(time_ms, peak_mb, loss, method, calls)."""
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
    impl, jit = VARIANTS[variant]

    def step(logits, labels):
        with tf.GradientTape() as tape:
            tape.watch(logits)
            loss = aaf_loss_terms(logits, labels, c, step=10, num_steps=100, mode='aaf', weights=weights,
                                  impl=impl)['aaf_loss']
        grads = tape.gradient(loss, [logits, weights.edge_w, weights.nonedge_w])
        return loss, grads

    step = tf.function(step, jit_compile=jit)
    for _ in range(2):  # trace / compile
        loss, grads = step(logits, labels)
        _ = [g.numpy() for g in grads]
    with open('/proc/self/clear_refs', 'w') as f:  # Linux only; an error here stops the benchmark
        f.write('5')
    baseline_kb = _status_kb('VmRSS')
    times = []
    gc.disable()
    try:
        begin = time.perf_counter()
        while len(times) < repeats or (time.perf_counter() - begin < min_seconds and len(times) < MAX_REPEATS):
            start = time.perf_counter()
            loss, grads = step(logits, labels)
            _ = [g.numpy() for g in grads]
            times.append(time.perf_counter() - start)
    finally:
        gc.enable()
    peak_kb = _status_kb('VmHWM') - baseline_kb
    method = 'RSS'
    if variant == 'kernel':
        from common.ops.affinity_kernel import cached_bytes
        peak_kb += cached_bytes() / 1024.0
        method = 'RSS + kernel buffers'
    if jit:
        xla_kb = _xla_buffer_bytes(os.environ['AAF_BENCH_XLA_DUMP']) / 1024.0
        if xla_kb > peak_kb:
            peak_kb, method = xla_kb, 'XLA buffer assignment'
    if peak_kb * 1024 < 64 * 1024:  # less than one mapped block: nothing was measured
        raise RuntimeError(f'{variant}: peak memory reads {peak_kb} kB: the high-water mark did not move, the '
                           'memory instrument is broken (is MALLOC_MMAP_THRESHOLD_ set?)')
    return {'time_ms': 1e3 * statistics.median(times), 'peak_mb': peak_kb / 1024.0, 'loss': float(loss),
            'method': method, 'calls': len(times)}


def _run_child(variant, shape, repeats, min_seconds):
    cmd = [sys.executable, '-m', 'benchmarks.aaf_loss', '--child', variant, '--shapes', ','.join(map(str, shape)),
           '--repeats', str(repeats), '--min-seconds', str(min_seconds)]
    env = {**os.environ, **CHILD_ENV}
    with tempfile.TemporaryDirectory() as dump_dir:
        if VARIANTS[variant][1]:  # XLA: dump the buffer assignment of the compiled step
            env['XLA_FLAGS'] = (env.get('XLA_FLAGS', '') + f' --xla_dump_to={dump_dir}').strip()
            env['AAF_BENCH_XLA_DUMP'] = dump_dir
        out = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
    if out.returncode != 0:
        raise RuntimeError(f'benchmark child {variant} {shape} failed:\n{out.stderr[-3000:]}')
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--shapes', nargs='+', default=list(DEFAULT_SHAPES), help='N,H,W,C per shape')
    parser.add_argument('--repeats', type=int, default=5, help='timed calls per variant at least (median reported)')
    parser.add_argument('--min-seconds', type=float, default=3.0,
                        help=f'keep timing a variant until this many seconds have passed (at most {MAX_REPEATS} calls)')
    parser.add_argument('--variants', nargs='+', choices=list(VARIANTS), default=list(VARIANTS),
                        help='implementations to measure (original and the default one are always measured)')
    parser.add_argument('--child', choices=list(VARIANTS), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    try:
        shapes = [tuple(int(v) for v in s.split(',')) for s in args.shapes]
        if any(len(s) != 4 for s in shapes):
            raise ValueError
    except ValueError:
        parser.error(f'--shapes: each shape must be N,H,W,C integers, got {args.shapes}')
    if args.child:
        print(json.dumps(_measure(args.child, shapes[0], args.repeats, args.min_seconds)))
        return
    os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
    from common.ops.affinity_fused import resolve_impl
    default = resolve_impl('auto')  # what training uses here; builds the kernel once if needed
    variants = [v for v in VARIANTS if v in set(args.variants) | {'original', default}]
    print(f'load average before: {" ".join(f"{v:.2f}" for v in os.getloadavg())} on {os.cpu_count()} CPUs; '
          f'peak memory: {MEMORY_METHOD}', flush=True)
    results = {}
    for shape in shapes:
        for variant in variants:
            r = _run_child(variant, shape, args.repeats, args.min_seconds)
            results[shape, variant] = r
            print(f'{variant:8s} {list(shape)}: {r["time_ms"]:8.1f} ms fwd+bwd (median of {r["calls"]}), '
                  f'peak memory {r["peak_mb"]:8.1f} MB ({r["method"]}), loss {r["loss"]:.6f}', flush=True)
    print(f'load average after: {" ".join(f"{v:.2f}" for v in os.getloadavg())}; default training '
          f'implementation (fused): {default}')
    largest = max(shapes, key=lambda s: s[0] * s[1] * s[2] * s[3])
    orig, fused = results[largest, 'original'], results[largest, default]
    print(f'fused vs original: time ratio {orig["time_ms"] / fused["time_ms"]:.1f}x, '
          f'peak memory ratio {orig["peak_mb"] / fused["peak_mb"]:.1f}x')


if __name__ == '__main__':
    main()
