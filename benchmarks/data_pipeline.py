"""Throughput of the AAF training input pipeline (tf.data) vs a sequential Python loop doing the same work.

Generates a small VOC-layout set (500x375 JPEG images, 8-bit grayscale class-index PNG labels) with NumPy + Pillow
in a temporary directory, then measures images/s of
* `common.data.pipeline.build_segmentation_dataset` (random scale + mirror + crop 336, batch 8, AUTOTUNE), after
  warm-up batches (tracing, thread start-up), and
* a plain sequential loop: Pillow decode, mean subtraction, random scale (Pillow bilinear image / nearest label),
  mirror, pad + random crop to 336 in NumPy, stacking batches of 8.
Prints both rates (and CPU time per image, which stays meaningful on a busy machine) and
`speed-up vs sequential loop: <r>x`. The speed-up is bounded by the number of idle CPU cores.

Run: python -m benchmarks.data_pipeline [--num_images 48] [--batches 8]
"""
import argparse
import os
import tempfile
import time

import numpy as np
from PIL import Image

from common.data.aaf_reader import IMG_MEAN as AAF_IMG_MEAN

IMG_MEAN = np.array(AAF_IMG_MEAN, np.float32)
CROP = 336
BATCH = 8


def make_voc_set(root, num_images, seed=0):
    """Writes `VOC2012/JPEGImages/<i>.jpg` + `VOC2012/segcls/<i>.png` (500x375 landscape) and a list file."""
    rng = np.random.default_rng(seed)
    os.makedirs(os.path.join(root, 'VOC2012', 'JPEGImages'), exist_ok=True)
    os.makedirs(os.path.join(root, 'VOC2012', 'segcls'), exist_ok=True)
    lines = []
    yy, xx = np.mgrid[:375, :500]
    for i in range(num_images):
        # Smooth image content so the JPEG size is realistic (random noise compresses unlike photos).
        base = rng.integers(0, 255, 3)
        image = (base + 60 * np.sin(xx[..., None] / (20 + 5 * i % 7) + np.arange(3))
                 + 40 * np.cos(yy[..., None] / 17.0)).clip(0, 255).astype(np.uint8)
        label = ((xx // 125 + yy // 125 + i) % 21).astype(np.uint8)
        label[yy % 125 < 3] = 255
        Image.fromarray(image).save(os.path.join(root, 'VOC2012', 'JPEGImages', f'{i:06d}.jpg'), quality=90)
        Image.fromarray(label, mode='L').save(os.path.join(root, 'VOC2012', 'segcls', f'{i:06d}.png'))
        lines.append(f'VOC2012/JPEGImages/{i:06d}.jpg VOC2012/segcls/{i:06d}.png')
    list_path = os.path.join(root, 'train.txt')
    with open(list_path, 'w') as f:
        f.write('\n'.join(lines) + '\n')
    return root + '/', list_path


def sequential_sample(image_path, label_path, rng):
    """The same augmentation as the pipeline, one image at a time with Pillow + NumPy."""
    image = Image.open(image_path).convert('RGB')
    label = Image.open(label_path)
    scale = rng.uniform(0.5, 2.0)
    size = (int(image.width * scale), int(image.height * scale))
    image = np.asarray(image.resize(size, Image.BILINEAR), np.float32) - IMG_MEAN
    label = np.asarray(label.resize(size, Image.NEAREST), np.uint8)[..., None]
    if rng.uniform() < 0.5:
        image, label = image[:, ::-1], label[:, ::-1]
    h, w = label.shape[:2]
    ph, pw = max(h, CROP), max(w, CROP)
    padded_image = np.zeros((ph, pw, 3), np.float32)
    padded_label = np.full((ph, pw, 1), 255, np.uint8)
    padded_image[:h, :w] = image
    padded_label[:h, :w] = label
    y, x = rng.integers(0, ph - CROP + 1), rng.integers(0, pw - CROP + 1)
    return padded_image[y:y + CROP, x:x + CROP], padded_label[y:y + CROP, x:x + CROP]


def time_sequential(pairs, num_batches, seed=0):
    rng = np.random.default_rng(seed)
    start, cpu_start = time.perf_counter(), time.process_time()
    count = 0
    for b in range(num_batches):
        samples = [sequential_sample(*pairs[(b * BATCH + k) % len(pairs)], rng) for k in range(BATCH)]
        np.stack([s[0] for s in samples]), np.stack([s[1] for s in samples])
        count += BATCH
    return count / (time.perf_counter() - start), (time.process_time() - cpu_start) / count


def time_pipeline(data_dir, data_list, num_batches, warmup=2):
    from common.data.pipeline import build_segmentation_dataset
    dataset = build_segmentation_dataset(data_dir, data_list, (CROP, CROP), BATCH, random_scale=True,
                                         random_mirror=True, random_crop=True, num_classes=21, seed=0)
    iterator = iter(dataset)
    for _ in range(warmup):
        next(iterator)
    start, cpu_start = time.perf_counter(), time.process_time()
    for _ in range(num_batches):
        images, labels = next(iterator)
        images.numpy(), labels.numpy()
    count = num_batches * BATCH
    return count / (time.perf_counter() - start), (time.process_time() - cpu_start) / count


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--num_images', type=int, default=48)
    parser.add_argument('--batches', type=int, default=8, help='timed batches of 8 per variant')
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix='data_pipeline_bench_') as root:
        data_dir, data_list = make_voc_set(root, args.num_images)
        from common.data.lists import read_labeled_image_list
        pairs = list(zip(*read_labeled_image_list(data_dir, data_list)))
        sequential = time_sequential(pairs, args.batches)
        pipeline = time_pipeline(data_dir, data_list, args.batches)
    print(f'cpu cores: {os.cpu_count()}, load average: {os.getloadavg()[0]:.1f} (the speed-up needs idle cores)')
    print(f'sequential Python loop (Pillow + NumPy): {sequential[0]:.1f} images/s, '
          f'{sequential[1] * 1e3:.1f} ms CPU per image')
    print(f'tf.data pipeline (AUTOTUNE): {pipeline[0]:.1f} images/s, {pipeline[1] * 1e3:.1f} ms CPU per image')
    print(f'speed-up vs sequential loop: {pipeline[0] / sequential[0]:.2f}x')


if __name__ == '__main__':
    main()
