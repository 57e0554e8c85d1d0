"""MoCo v2 (or v3) on CIFAR-10 with a CIFAR ResNet-18, then kNN evaluation.

    KERAS_BACKEND=jax python examples/moco_cifar10.py --version 2 --epochs 10

MoCo v2 keeps a queue of 4096 keys and simulates shuffle-BN on one device
(`split_batch_norm`, on by default for v2). Reads
$KERAS_SSL_DATA_DIR/cifar10.npz when present, else downloads CIFAR-10.
"""

import argparse

import keras

import keras_ssl
from keras_ssl.methods.moco import MoCoV2, MoCoV3

parser = argparse.ArgumentParser()
parser.add_argument("--version", type=int, default=2, choices=(2, 3))
parser.add_argument("--epochs", type=int, default=10)
parser.add_argument("--limit", type=int, default=10000)
parser.add_argument("--batch-size", type=int, default=256)
parser.add_argument("--width", type=float, default=0.5)
args = parser.parse_args()

(x_train, y_train), (x_test, y_test) = keras_ssl.data.load("cifar10")
x_train, y_train = x_train[: args.limit], y_train[: args.limit]

encoder = keras_ssl.backbones.resnet18(input_shape=(32, 32, 3), stem="cifar", width=args.width)
model = MoCoV2(encoder, queue_size=4096) if args.version == 2 else MoCoV3(encoder)
model.compile(optimizer=keras.optimizers.SGD(0.06, momentum=0.9))
model.fit(x_train, epochs=args.epochs, batch_size=args.batch_size)

train_features = keras_ssl.evaluation.embed(model.encoder, x_train)
test_features = keras_ssl.evaluation.embed(model.encoder, x_test)
print("kNN:", keras_ssl.evaluation.knn_accuracy(train_features, y_train, test_features, y_test))
model.encoder.save(f"moco_v{args.version}_encoder.keras")
