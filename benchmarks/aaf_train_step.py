"""What AAF costs per training step: baseline step vs AAF step, same network, same batch, same run.

A step is what `aaf.train` runs per iteration on one device: forward of the PSPNet (training mode, BN batch
statistics), the loss of `aaf.train.make_loss_fn` (pixel cross-entropy; plus the AAF term for 'aaf'), gradients
w.r.t. every trainable variable and the adversarial size weights, and one momentum-SGD update, all in one
`tf.function`. Modes:
* baseline: cross-entropy only (train.py);
* aaf-reference: + the literal original AAF loss (impl='reference', [N,H,W,C,8] tensors and gathers);
* aaf-default: + the AAF loss training uses by default (impl='auto': the compiled kernel on CPU, else XLA).
Networks:
* real: PSPNet / ResNet-101 (the original's network) at crop 336 (logits 42x42x21), batch --real-batch;
* quickstart: the quick start's reduced ResNet (aaf.quickstart.QUICKSTART_MODEL) at crop 96, batch 8.
Time: median wall time of --steps steps after 2 warm-up steps (tracing), modes interleaved round-robin.
Random weights and inputs: the cost of a step does not depend on the values. The load average is printed; on a
shared machine times are upper bounds.

Ends with `aaf step overhead: <x>x` = AAF step (default loss) / baseline step, real network.

Run: python -m benchmarks.aaf_train_step [--steps 3] [--real-batch 1] [--networks real quickstart]
"""
import argparse
import os
import statistics
import time


def _network(name, real_batch):
    """(model builder kwargs, batch, crop) of a network."""
    from aaf.quickstart import QUICKSTART_MODEL
    if name == 'real':
        return {}, real_batch, 336
    backbone = {'filters': tuple(int(v) for v in QUICKSTART_MODEL['backbone_filters'].split(',')),
                'num_blocks': tuple(int(v) for v in QUICKSTART_MODEL['backbone_blocks'].split(',')),
                'bn_decay': float(QUICKSTART_MODEL['bn_decay'])}
    return {'backbone': backbone, 'psp_channels': int(QUICKSTART_MODEL['psp_channels'])}, 8, 96


def _make_step(model, loss_fn, variables, optimizer):
    """One training step as a tf.function: forward, loss, gradients, momentum-SGD update."""
    import tensorflow as tf

    @tf.function
    def step(images, labels):
        with tf.GradientTape() as tape:
            terms, _ = loss_fn(model, (images, labels), True, tf.constant(10.0))
            ce_sum, count = terms.pop('seg_loss')
            loss = ce_sum / tf.maximum(count, 1.0)
            for ratios in terms.values():  # the affinity term: (sum, count) per size and edge / non-edge set
                for numerator, denominator in ratios:
                    loss += numerator / tf.maximum(denominator, 1.0)
        grads = tape.gradient(loss, variables)
        optimizer.apply_gradients(zip(grads, variables))
        return loss

    return step


def measure(network, real_batch, steps, modes, num_classes=21):
    """Median step time (ms) per mode for one network; builds the model once and one tf.function per mode."""
    import keras
    import numpy as np
    import tensorflow as tf
    from aaf.losses import AdaptiveAffinityWeights
    from aaf.train import make_loss_fn
    from common.models.factory import build_segmentation_model

    kwargs, batch, crop = _network(network, real_batch)
    keras.utils.set_random_seed(0)
    model = build_segmentation_model('pspnet', num_classes, (crop, crop), training=True, **kwargs)
    weights = AdaptiveAffinityWeights(num_classes)
    rng = np.random.default_rng(0)
    images = tf.constant(rng.normal(size=(batch, crop, crop, 3)).astype(np.float32) * 50)
    coarse = rng.integers(0, num_classes, (batch, crop // 24, crop // 24))
    labels = np.repeat(np.repeat(coarse, 24, 1), 24, 2)
    labels = tf.constant(np.where(rng.random(labels.shape) < 0.05, 255, labels).astype(np.uint8)[..., None])
    steps_by_mode = {}
    for mode in modes:
        loss_mode, impl = {'baseline': ('baseline', None), 'aaf-reference': ('aaf', 'reference'),
                           'aaf-default': ('aaf', 'auto')}[mode]
        loss_fn = make_loss_fn(loss_mode, num_classes, num_steps=1000, kld_margin=3.0, kld_lambda_1=1.0,
                               kld_lambda_2=1.0, weights=weights, fused=impl != 'reference', impl=impl)
        variables = model.trainable_variables + (weights.trainable_variables if loss_mode == 'aaf' else [])
        optimizer = keras.optimizers.SGD(learning_rate=1e-4, momentum=0.9)

        step = _make_step(model, loss_fn, variables, optimizer)
        for _ in range(2):  # trace, then one more so every lazy allocation has happened
            float(step(images, labels))
        steps_by_mode[mode] = step
    # Round-robin, so a change of the machine's load hits every mode alike.
    times = {mode: [] for mode in modes}
    for _ in range(steps):
        for mode in modes:
            start = time.perf_counter()
            float(steps_by_mode[mode](images, labels))
            times[mode].append(time.perf_counter() - start)
    results = {mode: 1e3 * statistics.median(t) for mode, t in times.items()}
    for mode in modes:
        print(f'{network:10s} batch {batch} crop {crop} {mode:13s}: {results[mode]:9.1f} ms/step '
              f'(median of {steps}, round-robin)', flush=True)
    return results


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--steps', type=int, default=3, help='timed steps per mode (median reported)')
    parser.add_argument('--real-batch', type=int, default=1, help='batch of the real network (8 in the paper)')
    parser.add_argument('--networks', nargs='+', choices=('real', 'quickstart'), default=['real', 'quickstart'])
    args = parser.parse_args(argv)
    if args.steps < 1 or args.real_batch < 1:
        parser.error('--steps and --real-batch must be >= 1')
    os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
    from common.ops.affinity_fused import resolve_impl
    print(f'load average before: {" ".join(f"{v:.2f}" for v in os.getloadavg())} on {os.cpu_count()} CPUs; '
          f'default AAF implementation here: {resolve_impl("auto")}', flush=True)
    modes = ('baseline', 'aaf-reference', 'aaf-default')
    results = {net: measure(net, args.real_batch, args.steps, modes) for net in args.networks}
    print(f'load average after: {" ".join(f"{v:.2f}" for v in os.getloadavg())}')
    for net, r in results.items():
        print(f'{net}: aaf-reference / baseline {r["aaf-reference"] / r["baseline"]:.2f}x, '
              f'aaf-default / baseline {r["aaf-default"] / r["baseline"]:.2f}x')
    headline = results.get('real') or next(iter(results.values()))
    print(f'aaf step overhead: {headline["aaf-default"] / headline["baseline"]:.2f}x')


if __name__ == '__main__':
    main()
