"""VICReg on CIFAR-10 with a CIFAR ResNet-18, then kNN evaluation.

    KERAS_BACKEND=jax python examples/vicreg_cifar10.py --epochs 10 --limit 10000

Reads $KERAS_SSL_DATA_DIR/cifar10.npz when present, else downloads CIFAR-10
through keras.datasets. VICReg goes NaN with too high a learning rate: Adam
at 1e-3 with a short warm-up is safe. The logged `variance` term should
reach ~0 early (every feature's std >= 1).
"""

import argparse

import keras

import keras_ssl
from keras_ssl.methods.vicreg import VICReg

parser = argparse.ArgumentParser()
parser.add_argument("--epochs", type=int, default=10)
parser.add_argument("--limit", type=int, default=10000)
parser.add_argument("--batch-size", type=int, default=256)
parser.add_argument("--width", type=float, default=0.5)
args = parser.parse_args()

(x_train, y_train), (x_test, y_test) = keras_ssl.data.load("cifar10")
x_train, y_train = x_train[: args.limit], y_train[: args.limit]

encoder = keras_ssl.backbones.resnet18(input_shape=(32, 32, 3), stem="cifar", width=args.width)
model = VICReg(encoder, sim_coeff=25.0, std_coeff=25.0, cov_coeff=1.0)
steps = args.epochs * (len(x_train) // args.batch_size)
warmup = max(1, steps // 10)
schedule = keras.optimizers.schedules.CosineDecay(
    0.0, decay_steps=max(1, steps - warmup), warmup_target=1e-3, warmup_steps=warmup
)
model.compile(optimizer=keras.optimizers.Adam(schedule))
model.fit(x_train, epochs=args.epochs, batch_size=args.batch_size)

train_features = keras_ssl.evaluation.embed(model.encoder, x_train)
test_features = keras_ssl.evaluation.embed(model.encoder, x_test)
print("kNN:", keras_ssl.evaluation.knn_accuracy(train_features, y_train, test_features, y_test))
model.encoder.save("vicreg_encoder.keras")
