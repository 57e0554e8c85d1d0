"""Short quality run of the non-contrastive methods on a CIFAR-10 subset.

    KERAS_BACKEND=jax python benchmarks/noncontrastive_cifar10.py [--images 10000 --epochs 5]

Trains SimSiam, Barlow Twins and VICReg from the same random initialisation
of `keras_ssl.backbones.tiny_encoder` and prints each encoder's weighted kNN
top-1 (k=200, T=0.1, cosine, train subset as the gallery) on a test subset,
next to the random-init encoder's, with the final `z_std` (collapse monitor,
healthy ~1/sqrt(projection_dim)) and the budget used. Optimisers: SimSiam
SGD with momentum (its paper's), the other two Adam (their papers use LARS).
"""

import argparse
import time

import keras

import keras_ssl
from keras_ssl.methods.barlow_twins import BarlowTwins
from keras_ssl.methods.simsiam import SimSiam
from keras_ssl.methods.vicreg import VICReg

METHODS = {
    "simsiam": (SimSiam, lambda bs: keras.optimizers.SGD(0.03 * bs / 256, momentum=0.9, weight_decay=5e-4)),
    "barlow_twins": (BarlowTwins, lambda bs: keras.optimizers.Adam(1e-3)),
    "vicreg": (VICReg, lambda bs: keras.optimizers.Adam(1e-3)),
}

parser = argparse.ArgumentParser()
parser.add_argument("--images", type=int, default=10000, help="training images (CIFAR-10 train subset)")
parser.add_argument("--test-images", type=int, default=10000, help="kNN queries (test subset)")
parser.add_argument("--epochs", type=int, default=5)
parser.add_argument("--batch-size", type=int, default=256)
parser.add_argument("--width", type=int, default=32, help="tiny_encoder base width")
parser.add_argument("--methods", default=",".join(METHODS))
parser.add_argument("--seed", type=int, default=0)
args = parser.parse_args()

(x_train, y_train), (x_test, y_test) = keras_ssl.data.load("cifar10")
x_train, y_train = x_train[: args.images], y_train[: args.images]
x_test, y_test = x_test[: args.test_images], y_test[: args.test_images]


def new_encoder():
    keras.utils.set_random_seed(args.seed)  # the same initial weights for every method
    return keras_ssl.backbones.tiny_encoder((32, 32, 3), width=args.width)


def knn(encoder):
    train = keras_ssl.evaluation.embed(encoder, x_train)
    test = keras_ssl.evaluation.embed(encoder, x_test)
    return keras_ssl.evaluation.knn_accuracy(train, y_train, test, y_test)["top1"]


print(
    f"backend={keras.backend.backend()} images={len(x_train)} test={len(x_test)} "
    f"epochs={args.epochs} batch={args.batch_size} tiny_encoder width={args.width}"
)
print(f"{'random-init':>13}: kNN top-1 {knn(new_encoder()):.4f}")
for name in args.methods.split(","):
    cls, optimizer = METHODS[name]
    model = cls(new_encoder(), seed=args.seed)
    model.compile(optimizer=optimizer(args.batch_size))
    start = time.time()
    history = model.fit(x_train, epochs=args.epochs, batch_size=args.batch_size, verbose=0).history
    seconds = time.time() - start
    print(
        f"{name:>13}: kNN top-1 {knn(model.encoder):.4f}  loss {history['loss'][-1]:.4f}  "
        f"z_std {history['z_std'][-1]:.4f} (1/sqrt(P)={model.projection_dim ** -0.5:.4f})  "
        f"train {seconds:.0f}s"
    )
