"""Barlow Twins on CIFAR-10 with a CIFAR ResNet-18, then kNN evaluation.

    KERAS_BACKEND=jax python examples/barlow_twins_cifar10.py --epochs 10 --limit 10000

Reads $KERAS_SSL_DATA_DIR/cifar10.npz when present, else downloads CIFAR-10
through keras.datasets. The paper trains with LARS; Adam at 1e-3 is the
usual small-scale substitute. The logged `on_diagonal` term falls first
(the views agree), `off_diagonal` (already times `lambd`) follows.
"""

import argparse

import keras

import keras_ssl
from keras_ssl.methods.barlow_twins import BarlowTwins

parser = argparse.ArgumentParser()
parser.add_argument("--epochs", type=int, default=10)
parser.add_argument("--limit", type=int, default=10000)
parser.add_argument("--batch-size", type=int, default=256)
parser.add_argument("--width", type=float, default=0.5)
parser.add_argument("--lambd", type=float, default=5e-3)
args = parser.parse_args()

(x_train, y_train), (x_test, y_test) = keras_ssl.data.load("cifar10")
x_train, y_train = x_train[: args.limit], y_train[: args.limit]

encoder = keras_ssl.backbones.resnet18(input_shape=(32, 32, 3), stem="cifar", width=args.width)
model = BarlowTwins(encoder, lambd=args.lambd)
model.compile(optimizer=keras.optimizers.Adam(1e-3))
model.fit(x_train, epochs=args.epochs, batch_size=args.batch_size)

train_features = keras_ssl.evaluation.embed(model.encoder, x_train)
test_features = keras_ssl.evaluation.embed(model.encoder, x_test)
print("kNN:", keras_ssl.evaluation.knn_accuracy(train_features, y_train, test_features, y_test))
model.encoder.save("barlow_twins_encoder.keras")
