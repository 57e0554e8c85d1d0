"""MAE on CIFAR-10 with a ViT-Tiny (patch 4), then kNN and a reconstruction figure.

    KERAS_BACKEND=jax python examples/mae_cifar10.py --epochs 20 --limit 10000

Reads $KERAS_SSL_DATA_DIR/cifar10.npz when present, else downloads CIFAR-10
through keras.datasets.
"""

import common
import keras

from keras_ssl.methods.mae import MAE
from keras_ssl.plots import plot_reconstruction

args = common.parser(__doc__, epochs=20, backbone="vit_tiny").parse_args()

(x_train, y_train), (x_test, y_test) = common.load_cifar10(args)

encoder = common.encoder(args)
model = MAE(encoder, mask_ratio=0.75, decoder_dim=128, decoder_depth=2)
model.compile(optimizer=keras.optimizers.AdamW(1e-3, weight_decay=0.05))
model.fit(x_train, epochs=args.epochs, batch_size=args.batch_size)

common.report_knn(model.encoder, (x_train, y_train), (x_test, y_test))
masked, reconstructed = model.reconstruct(x_test[:8])
plot_reconstruction(x_test[:8], masked, reconstructed, "mae_reconstruction.png")
model.encoder.save("mae_encoder.keras")
