"""SwAV on CIFAR-10 with multi-crop and a small conv encoder, then kNN evaluation.

    KERAS_BACKEND=jax python examples/swav_cifar10.py --epochs 10 --limit 10000

Reads $KERAS_SSL_DATA_DIR/cifar10.npz when present, else downloads CIFAR-10
through keras.datasets. The encoder takes any image size (input
`(None, None, 3)`), so the 32px global crops and 16px local crops each run
through it once per step; `input_shape` tells SwAV the training image size.
"""

import argparse

import keras

import keras_ssl
from keras_ssl.methods.swav import SwAV

parser = argparse.ArgumentParser()
parser.add_argument("--epochs", type=int, default=10)
parser.add_argument("--limit", type=int, default=10000)
parser.add_argument("--batch-size", type=int, default=256)
parser.add_argument("--width", type=int, default=32)
args = parser.parse_args()

(x_train, y_train), (x_test, y_test) = keras_ssl.data.load("cifar10")
x_train, y_train = x_train[: args.limit], y_train[: args.limit]

encoder = keras_ssl.backbones.tiny_encoder(input_shape=(None, None, 3), width=args.width)
model = SwAV(
    encoder, input_shape=(32, 32, 3), num_prototypes=512,  # default views: 2 global, 4 local 16 px
    freeze_prototypes_steps=len(x_train) // args.batch_size,  # the first epoch, as in the paper
    queue_size=0 if args.batch_size >= 256 else 3840,  # small batches need the queue
)
model.compile(optimizer=keras.optimizers.Adam(1e-3))
model.fit(x_train, epochs=args.epochs, batch_size=args.batch_size)

train_features = keras_ssl.evaluation.embed(model.encoder, x_train)
test_features = keras_ssl.evaluation.embed(model.encoder, x_test)
print("kNN:", keras_ssl.evaluation.knn_accuracy(train_features, y_train, test_features, y_test))
model.encoder.save("swav_encoder.keras")
