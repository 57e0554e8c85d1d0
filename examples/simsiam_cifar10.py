"""SimSiam on CIFAR-10 with a CIFAR ResNet-18, then kNN evaluation.

    KERAS_BACKEND=jax python examples/simsiam_cifar10.py --epochs 10 --limit 10000

Reads $KERAS_SSL_DATA_DIR/cifar10.npz when present, else downloads CIFAR-10
through keras.datasets. SGD with momentum as in the paper (lr 0.03 per 256
images, weight decay 5e-4 on CIFAR); watch `z_std`: it should stay near
1/sqrt(projection_dim), a fall towards 0 means collapse.
"""

import argparse

import keras

import keras_ssl
from keras_ssl.methods.simsiam import SimSiam

parser = argparse.ArgumentParser()
parser.add_argument("--epochs", type=int, default=10)
parser.add_argument("--limit", type=int, default=10000)
parser.add_argument("--batch-size", type=int, default=256)
parser.add_argument("--width", type=float, default=0.5)
args = parser.parse_args()

(x_train, y_train), (x_test, y_test) = keras_ssl.data.load("cifar10")
x_train, y_train = x_train[: args.limit], y_train[: args.limit]

encoder = keras_ssl.backbones.resnet18(input_shape=(32, 32, 3), stem="cifar", width=args.width)
model = SimSiam(encoder)
lr = 0.03 * args.batch_size / 256
model.compile(optimizer=keras.optimizers.SGD(lr, momentum=0.9, weight_decay=5e-4))
model.fit(x_train, epochs=args.epochs, batch_size=args.batch_size)

train_features = keras_ssl.evaluation.embed(model.encoder, x_train)
test_features = keras_ssl.evaluation.embed(model.encoder, x_test)
print("kNN:", keras_ssl.evaluation.knn_accuracy(train_features, y_train, test_features, y_test))
model.encoder.save("simsiam_encoder.keras")
