"""DINO on CIFAR-10 with multi-crop, then kNN evaluation.

    KERAS_BACKEND=jax python examples/dino_cifar10.py --epochs 10 --limit 10000 [--backbone vit_tiny]

Reads $KERAS_SSL_DATA_DIR/cifar10.npz when present, else downloads CIFAR-10
through keras.datasets. DINO takes any encoder that accepts both crop sizes:
a small conv net with input `(None, None, 3)` (default, fast on CPU) or a
ViT, whose position embeddings are interpolated for the 16px local crops.
"""

import common
import keras

from keras_ssl.methods.dino import DINO

args = common.parser(__doc__, backbone="tiny", width=1.0).parse_args()

(x_train, y_train), (x_test, y_test) = common.load_cifar10(args)

# ViTs interpolate their position embeddings for the 16 px local crops.
encoder = common.encoder(args, any_size=not args.backbone.startswith("vit"))
steps = args.epochs * (len(x_train) // args.batch_size)
model = DINO(
    encoder,
    input_shape=(32, 32, 3),
    output_dim=4096,  # default views: 2 global, 4 local 16 px crops
    momentum=0.99,  # short runs (paper: 0.996 over 100+ epochs)
    teacher_temperature=0.07,
    warmup_teacher_temperature=0.04,
    warmup_teacher_steps=steps // 3,
)
model.compile(optimizer=keras.optimizers.AdamW(5e-4, weight_decay=0.04))
model.fit(x_train, epochs=args.epochs, batch_size=args.batch_size)

common.report_knn(model.encoder, (x_train, y_train), (x_test, y_test))
model.encoder.save("dino_encoder.keras")
