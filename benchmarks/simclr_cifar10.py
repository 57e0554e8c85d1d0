"""Short SimCLR quality run on CIFAR-10: kNN top-1 before and after training.

    KERAS_BACKEND=jax python benchmarks/simclr_cifar10.py [--images 10000 --epochs 5]

Prints the random-init and trained encoder's weighted kNN accuracy (k=200,
T=0.1, cosine) on the full CIFAR-10 test set, with the budget used.
"""

import argparse
import time

import keras

import keras_ssl

parser = argparse.ArgumentParser()
parser.add_argument("--images", type=int, default=10000)
parser.add_argument("--epochs", type=int, default=5)
parser.add_argument("--batch-size", type=int, default=256)
parser.add_argument("--width", type=float, default=0.25)
parser.add_argument("--lr", type=float, default=2e-3)
parser.add_argument("--seed", type=int, default=0)
args = parser.parse_args()

keras.utils.set_random_seed(args.seed)
(x_train, y_train), (x_test, y_test) = keras_ssl.data.load("cifar10")
x_train, y_train = x_train[: args.images], y_train[: args.images]
encoder = keras_ssl.backbones.resnet18(input_shape=(32, 32, 3), stem="cifar", width=args.width)
model = keras_ssl.SimCLR(encoder, temperature=0.5, seed=args.seed)
model.compile(optimizer=keras.optimizers.Adam(args.lr))


def knn():
    train = keras_ssl.evaluation.embed(model.encoder, x_train)
    test = keras_ssl.evaluation.embed(model.encoder, x_test)
    return keras_ssl.evaluation.knn_accuracy(train, y_train, test, y_test)["top1"]


before = knn()
start = time.time()
model.fit(x_train, epochs=args.epochs, batch_size=args.batch_size, verbose=2)
seconds = time.time() - start
after = knn()
print(
    f"backend={keras.backend.backend()} images={args.images} epochs={args.epochs} "
    f"batch={args.batch_size} resnet18-cifar width={args.width} train_time={seconds:.0f}s"
)
print(f"kNN top-1 (k=200, T=0.1) random-init={before:.4f} simclr={after:.4f}")
