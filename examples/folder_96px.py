"""Pretrain from an image folder at 96 px (STL-10-like), streamed from disk.

    KERAS_BACKEND=jax python examples/folder_96px.py --data path/to/photos --epochs 20
    KERAS_BACKEND=jax python examples/folder_96px.py          # a demo folder made from CIFAR-10

The folder holds one sub-folder per class (used only for the kNN check) or
just images. Files of any size, aspect and format are decoded in worker
threads, resized to cover 96x96 and centre-cropped; the views are the
method's ImageNet-size recipe (blur, colour strength 1.0) and the encoder a
ResNet-18 with the ImageNet stem. Nothing holds the whole folder in memory.
"""

import argparse
import os

import keras
import numpy as np

import keras_ssl
from keras_ssl.data import ImageFiles

parser = argparse.ArgumentParser(formatter_class=argparse.ArgumentDefaultsHelpFormatter)
parser.add_argument("--data", default=None, help="image folder (default: a demo folder of CIFAR-10 upscaled)")
parser.add_argument("--method", default="simclr", help="a keras-ssl method name (simclr, byol, dino, ...)")
parser.add_argument("--epochs", type=int, default=5, help="training epochs")
parser.add_argument("--batch-size", type=int, default=64, help="images per step")
parser.add_argument("--steps-per-epoch", type=int, default=None, help="steps per epoch (default: the whole folder)")
parser.add_argument(
    "--backbone",
    default="resnet18",
    help="resnet18 (ImageNet stem at 96 px), tiny, resnet50, vit_small, or a keras.applications "
    "model (mobilenet_v3_small, efficientnet_b0, convnext_tiny, ...)",
)
parser.add_argument("--width", type=float, default=0.5, help="width multiplier of tiny and the ResNets")
parser.add_argument("--test-limit", type=int, default=2000, help="test images embedded for the kNN check")
parser.add_argument("--demo-images", type=int, default=2000, help="images of the demo folder")
args = parser.parse_args()


def demo_folder(count, root="/tmp/keras_ssl_demo_folder"):
    """CIFAR-10 images upscaled to 96-128 px JPEGs of varied aspect, one sub-folder per class."""
    from PIL import Image

    if os.path.isdir(root) and sum(len(f) for _, _, f in os.walk(root)) >= count:
        return root
    (x, y), _ = keras_ssl.data.load("cifar10")
    rng = np.random.default_rng(0)
    for i in range(count):
        folder = os.path.join(root, f"class_{y[i]}")
        os.makedirs(folder, exist_ok=True)
        w, h = rng.integers(96, 129, 2)
        Image.fromarray(x[i]).resize((int(w), int(h)), Image.BICUBIC).save(os.path.join(folder, f"{i}.jpg"))
    return root


root = args.data or demo_folder(args.demo_images)
stream = ImageFiles.from_folder(root, image_size=96, batch_size=args.batch_size)
train, test = stream.split(0.2) if stream.labels is not None else (stream, None)

method = keras_ssl.methods.METHODS[args.method]
spatial = (None, None, 3) if method.local_views else (96, 96, 3)  # multi-crop: two crop sizes
if args.backbone.startswith("vit"):
    spatial = (96, 96, 3)  # ViTs interpolate their position embeddings for local crops
encoder = keras_ssl.backbones.get(args.backbone, spatial, width=args.width)
model = method(encoder, input_shape=(96, 96, 3), seed=0)
model.compile(optimizer=keras.optimizers.Adam(1e-3))
model.fit(train, epochs=args.epochs, steps_per_epoch=args.steps_per_epoch)

if test is not None:
    rng = np.random.default_rng(0)  # random subsets: the files are sorted by class
    gallery = np.sort(rng.permutation(len(train.files))[:2000])
    queries = np.sort(rng.permutation(len(test.files))[: args.test_limit])
    x_train, y_train = train.subset(gallery, shuffle=False, drop_remainder=False).to_arrays()
    x_test, y_test = test.subset(queries).to_arrays()
    features = [keras_ssl.evaluation.embed(model.encoder, x) for x in (x_train, x_test)]
    print("kNN:", keras_ssl.evaluation.knn_accuracy(features[0], y_train, features[1], y_test))
model.encoder.save(f"{args.method}_96px_encoder.keras")
