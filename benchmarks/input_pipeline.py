"""Streaming input: decode speed per loader, training-step speed, and memory vs folder size.

    python benchmarks/input_pipeline.py                 # all three parts, on the current backend
    python benchmarks/input_pipeline.py --part speed    # loaders and the step only
    python benchmarks/input_pipeline.py --part memory   # peak RSS with 2,000 vs 16,000 files

The folders hold JPEGs of 160x160 (made once under --cache from CIFAR-10
when `$KERAS_SSL_DATA_DIR/cifar10.npz` exists, else from smooth random
images), read at --image-size 96.

- speed: images/s of each way to decode the files into uint8 batches, each
  read through Keras (`model.predict` on a no-op model, so Keras's own
  enqueuer and workers are part of the figure): `ImageFiles` with 1, 2 and
  4 threads and with 2 processes; `tf.data` (TensorFlow's own JPEG decoder,
  parallel map, prefetch) when TensorFlow is installed; a torch `DataLoader`
  with 2 worker processes over the same decoder when torch is installed.
  Then the training step alone (SimCLR, CIFAR ResNet-18 x0.5, batch 64, on
  in-memory images) and the same step fed by `ImageFiles`; the input side
  must be at least twice the step.
- memory: `keras-ssl pretrain --data FOLDER --image-size 96` for the same
  number of steps on 2,000 and 16,000 files, each in a fresh process; the
  peak RSS must differ by less than 100 MB.
"""

import argparse
import os
import subprocess
import sys
import time

import numpy as np


def parse():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--part", choices=("speed", "memory", "all"), default="all")
    p.add_argument("--cache", default="/tmp/keras_ssl_jpegs", help="where the JPEG folders are made")
    p.add_argument("--image-size", type=int, default=96)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--files", type=int, default=2000, help="files of the speed folder")
    p.add_argument("--steps", type=int, default=6, help="timed training steps")
    p.add_argument("--memory-steps", type=int, default=30, help="training steps of each memory run")
    return p.parse_args()


def make_folder(root, count):
    """`count` 160x160 JPEGs (flat folder), made once."""
    from PIL import Image

    folder = os.path.join(root, f"jpeg_{count}")
    if os.path.isdir(folder) and len(os.listdir(folder)) >= count:
        return folder
    os.makedirs(folder, exist_ok=True)
    source = os.path.join(os.environ.get("KERAS_SSL_DATA_DIR", ""), "cifar10.npz")
    if os.path.isfile(source):
        with np.load(source) as f:
            images = f["x_train"]
    else:
        rng = np.random.default_rng(0)
        images = np.clip(rng.normal(128, 40, (512, 8, 8, 3)), 0, 255).astype("uint8")
    for i in range(count):
        Image.fromarray(images[i % len(images)]).resize((160, 160), Image.BICUBIC).save(
            os.path.join(folder, f"{i:06d}.jpg"), quality=90
        )
    return folder


def rate(fn, images):
    start = time.perf_counter()
    fn()
    return images / (time.perf_counter() - start)


def loaders(folder, size, batch):
    """img/s of each loader, read through Keras."""
    import keras

    from keras_ssl.data import ImageFiles, decode_image, folder_files

    files = folder_files(folder)[0]
    n = len(files) - len(files) % batch
    model = keras.Sequential([keras.Input((size, size, 3)), keras.layers.GlobalAveragePooling2D()])
    results = {}
    for name, kwargs in (
        ("ImageFiles, 1 thread", dict(workers=1)),
        ("ImageFiles, 2 threads", dict(workers=2)),
        ("ImageFiles, 4 threads", dict(workers=4)),
        ("ImageFiles, 2 processes", dict(workers=2, use_multiprocessing=True)),
    ):
        stream = ImageFiles(files, image_size=size, batch_size=batch, channels=3, **kwargs)
        results[name] = rate(lambda: model.predict(stream, verbose=0), n)
    try:
        import tensorflow as tf
    except ImportError:
        tf = None
    if tf is not None:

        def load(path):
            image = tf.io.decode_jpeg(tf.io.read_file(path), channels=3)
            return tf.cast(tf.image.resize(image, (size, size), antialias=True), "uint8")

        ds = (
            tf.data.Dataset.from_tensor_slices(files[:n])
            .map(load, num_parallel_calls=tf.data.AUTOTUNE)
            .batch(batch)
            .prefetch(tf.data.AUTOTUNE)
        )
        results["tf.data (tf.io.decode_jpeg, AUTOTUNE)"] = rate(lambda: model.predict(ds, verbose=0), n)
    try:
        import torch
    except ImportError:
        torch = None
    if torch is not None:

        class Files(torch.utils.data.Dataset):
            def __len__(self):
                return n

            def __getitem__(self, i):
                return torch.from_numpy(decode_image(files[i], size)[0])

        loader = torch.utils.data.DataLoader(Files(), batch_size=batch, num_workers=2)
        results["torch DataLoader, 2 workers"] = rate(lambda: [b.shape for b in loader], n)
    return results


def step_rates(folder, size, batch, steps):
    """img/s of the SimCLR step on in-memory images, and fed by ImageFiles."""

    import keras_ssl
    from keras_ssl.data import ImageFiles

    encoder = keras_ssl.backbones.resnet18(input_shape=(size, size, 3), stem="cifar", width=0.5)
    model = keras_ssl.SimCLR(encoder, seed=0)
    model.compile(optimizer="adam")
    x = np.random.default_rng(0).integers(0, 256, (batch * (steps + 2), size, size, 3), "uint8")
    model.fit(x[: 2 * batch], batch_size=batch, epochs=1, verbose=0)  # compile
    in_memory = rate(lambda: model.fit(x[: steps * batch], batch_size=batch, epochs=1, verbose=0), steps * batch)
    stream = ImageFiles.from_folder(folder, image_size=size, batch_size=batch)
    streamed = rate(lambda: model.fit(stream, steps_per_epoch=steps, epochs=1, verbose=0), steps * batch)
    return in_memory, streamed


def peak_rss(folder, size, steps):
    """Peak RSS (MB) of `keras-ssl pretrain` on `folder`, in a fresh process."""
    code = (
        "import resource, sys\n"
        "from keras_ssl import cli\n"
        f"cli.main(['pretrain', '--data', {folder!r}, '--image-size', '{size}', '--epochs', '1',"
        f" '--steps-per-epoch', '{steps}', '--batch-size', '64', '--output', {folder + '_run'!r},"
        " '--overwrite', '--no-plots', '--verbose', '0'])\n"
        "print('PEAK', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    peak = [line for line in out.stdout.splitlines() if line.startswith("PEAK")]
    if not peak:
        raise RuntimeError(out.stderr[-3000:])
    return int(peak[0].split()[1]) / 1024


def main():
    args = parse()
    import keras

    print(f"backend {keras.backend.backend()}, {os.cpu_count()} CPU cores, image size {args.image_size}")
    if args.part in ("speed", "all"):
        folder = make_folder(args.cache, args.files)
        print(f"\ninput pipelines, {args.files} JPEGs of 160x160 -> {args.image_size} px, batch {args.batch_size}")
        results = loaders(folder, args.image_size, args.batch_size)
        for name, value in results.items():
            print(f"  {name:<40} {value:8.0f} img/s")
        step, streamed = step_rates(folder, args.image_size, args.batch_size, args.steps)
        best = max(v for k, v in results.items() if k.startswith("ImageFiles"))
        print(f"\ntraining step (SimCLR, CIFAR ResNet-18 x0.5, batch {args.batch_size}):")
        print(f"  in-memory images                         {step:8.1f} img/s")
        print(f"  fed by ImageFiles                        {streamed:8.1f} img/s")
        print(f"  ImageFiles alone / step                  {best / step:8.1f}x  (must be >= 2)")
    if args.part in ("memory", "all"):
        print(f"\npeak RSS of `keras-ssl pretrain`, {args.memory_steps} steps at {args.image_size} px:")
        peaks = {}
        for count in (2000, 16000):
            folder = make_folder(args.cache, count)
            peaks[count] = peak_rss(folder, args.image_size, args.memory_steps)
            print(f"  {count:>6} files                             {peaks[count]:8.0f} MB")
        print(f"  difference                               {peaks[16000] - peaks[2000]:8.0f} MB  (must be < 100)")


if __name__ == "__main__":
    main()
