"""MAE on CIFAR-10 with a ViT-Tiny (patch 4), then kNN and a reconstruction figure.

    KERAS_BACKEND=jax python examples/mae_cifar10.py --epochs 20 --limit 10000

Reads $KERAS_SSL_DATA_DIR/cifar10.npz when present, else downloads CIFAR-10
through keras.datasets.
"""

import argparse

import keras

import keras_ssl
from keras_ssl.backbones.vit import vit_tiny
from keras_ssl.methods.mae import MAE
from keras_ssl.plots import plot_reconstruction

parser = argparse.ArgumentParser()
parser.add_argument("--epochs", type=int, default=20)
parser.add_argument("--limit", type=int, default=10000)
parser.add_argument("--batch-size", type=int, default=256)
args = parser.parse_args()

(x_train, y_train), (x_test, y_test) = keras_ssl.data.load("cifar10")
x_train, y_train = x_train[: args.limit], y_train[: args.limit]

encoder = vit_tiny(image_size=32, patch_size=4)
model = MAE(encoder, mask_ratio=0.75, decoder_dim=128, decoder_depth=2)
model.compile(optimizer=keras.optimizers.AdamW(1e-3, weight_decay=0.05))
model.fit(x_train, epochs=args.epochs, batch_size=args.batch_size)

train_features = keras_ssl.evaluation.embed(model.encoder, x_train)
test_features = keras_ssl.evaluation.embed(model.encoder, x_test)
print("kNN:", keras_ssl.evaluation.knn_accuracy(train_features, y_train, test_features, y_test))
masked, reconstructed = model.reconstruct(x_test[:8])
plot_reconstruction(x_test[:8], masked, reconstructed, "mae_reconstruction.png")
model.encoder.save("mae_encoder.keras")
