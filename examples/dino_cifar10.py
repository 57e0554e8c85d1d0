"""DINO on CIFAR-10 with multi-crop, then kNN evaluation.

    KERAS_BACKEND=jax python examples/dino_cifar10.py --epochs 10 --limit 10000 [--vit]

Reads $KERAS_SSL_DATA_DIR/cifar10.npz when present, else downloads CIFAR-10
through keras.datasets. DINO takes any encoder that accepts both crop sizes:
a small conv net with input `(None, None, 3)` (default, fast on CPU) or a
ViT, whose position embeddings are interpolated for the 16px local crops.
"""

import argparse

import keras

import keras_ssl
from keras_ssl.methods.dino import DINO

parser = argparse.ArgumentParser()
parser.add_argument("--epochs", type=int, default=10)
parser.add_argument("--limit", type=int, default=10000)
parser.add_argument("--batch-size", type=int, default=256)
parser.add_argument("--vit", action="store_true", help="train a ViT-Tiny (patch 4)")
args = parser.parse_args()

(x_train, y_train), (x_test, y_test) = keras_ssl.data.load("cifar10")
x_train, y_train = x_train[: args.limit], y_train[: args.limit]

if args.vit:
    encoder = keras_ssl.backbones.vit_tiny(image_size=32, patch_size=4)
else:
    encoder = keras_ssl.backbones.tiny_encoder(input_shape=(None, None, 3), width=32)
steps = args.epochs * (len(x_train) // args.batch_size)
model = DINO(
    encoder, input_shape=(32, 32, 3), output_dim=4096,  # default views: 2 global, 4 local 16 px crops
    momentum=0.99,  # short runs (paper: 0.996 over 100+ epochs)
    teacher_temperature=0.07, warmup_teacher_temperature=0.04, warmup_teacher_steps=steps // 3,
)
model.compile(optimizer=keras.optimizers.AdamW(5e-4, weight_decay=0.04))
model.fit(x_train, epochs=args.epochs, batch_size=args.batch_size)

train_features = keras_ssl.evaluation.embed(model.encoder, x_train)
test_features = keras_ssl.evaluation.embed(model.encoder, x_test)
print("kNN:", keras_ssl.evaluation.knn_accuracy(train_features, y_train, test_features, y_test))
model.encoder.save("dino_encoder.keras")
