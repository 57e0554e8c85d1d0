"""Short quality run of the multi-crop methods (SwAV, DINO) on a CIFAR-10 subset.

    KERAS_BACKEND=jax python benchmarks/multicrop_cifar10.py [--images 10000 --epochs 5]

Trains SwAV and DINO, each from the same random `tiny_encoder` (built with
input `(None, None, 3)` so it takes the 32px global and 16px local crops),
and prints each encoder's weighted kNN top-1 (k=200, T=0.1, cosine, on
encoder features) next to the random-init encoder's.
"""

import argparse
import time

import keras

import keras_ssl
from keras_ssl.methods.dino import DINO
from keras_ssl.methods.swav import SwAV

parser = argparse.ArgumentParser()
parser.add_argument("--images", type=int, default=10000)
parser.add_argument("--test-images", type=int, default=10000)
parser.add_argument("--epochs", type=int, default=5)
parser.add_argument("--batch-size", type=int, default=256)
parser.add_argument("--width", type=int, default=32)
parser.add_argument("--local-crops", type=int, default=4)
parser.add_argument("--lr", type=float, default=1e-3)
parser.add_argument("--methods", default="swav,dino")
parser.add_argument("--seed", type=int, default=0)
args = parser.parse_args()

(x_train, y_train), (x_test, y_test) = keras_ssl.data.load("cifar10")
x_train, y_train = x_train[: args.images], y_train[: args.images]
x_test, y_test = x_test[: args.test_images], y_test[: args.test_images]
steps = args.epochs * (len(x_train) // args.batch_size)
common = dict(input_shape=(32, 32, 3), num_local_crops=args.local_crops, local_size=16, seed=args.seed)
METHODS = {
    "swav": lambda enc: SwAV(enc, num_prototypes=512, freeze_prototypes_steps=steps // args.epochs,
                             **common),
    "dino": lambda enc: DINO(enc, output_dim=4096, momentum=0.99, teacher_temperature=0.07,
                             warmup_teacher_steps=steps // 3, **common),
}


def encoder():
    keras.utils.set_random_seed(args.seed)  # the same initial weights for every method
    return keras_ssl.backbones.tiny_encoder((None, None, 3), width=args.width)


def knn(enc):
    train = keras_ssl.evaluation.embed(enc, x_train)
    test = keras_ssl.evaluation.embed(enc, x_test)
    return keras_ssl.evaluation.knn_accuracy(train, y_train, test, y_test)["top1"]


print(f"backend={keras.backend.backend()} images={args.images} test={len(x_test)} "
      f"epochs={args.epochs} batch={args.batch_size} tiny_encoder width={args.width} "
      f"crops=2x32+{args.local_crops}x16")
print(f"kNN top-1 (k=200, T=0.1) random-init: {knn(encoder()):.4f}")
for name in args.methods.split(","):
    model = METHODS[name](encoder())
    model.compile(optimizer=keras.optimizers.Adam(args.lr))
    start = time.time()
    history = model.fit(x_train, epochs=args.epochs, batch_size=args.batch_size, verbose=0)
    print(f"kNN top-1 (k=200, T=0.1) {name}: {knn(model.encoder):.4f} "
          f"(loss {history.history['loss'][0]:.3f} -> {history.history['loss'][-1]:.3f}, "
          f"train {time.time() - start:.0f}s)")
