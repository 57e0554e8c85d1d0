"""BYOL on CIFAR-10 with a CIFAR ResNet-18, then kNN evaluation.

    KERAS_BACKEND=jax python examples/byol_cifar10.py --epochs 10 --limit 10000

Reads $KERAS_SSL_DATA_DIR/cifar10.npz when present, else downloads CIFAR-10
through keras.datasets.
"""

import common
import keras

from keras_ssl.methods.byol import BYOL

args = common.parser(__doc__).parse_args()

(x_train, y_train), (x_test, y_test) = common.load_cifar10(args)

encoder = common.encoder(args)
model = BYOL(encoder, momentum=0.99)  # 0.99 for short runs (paper: 0.996 over 300+ epochs)
model.compile(optimizer=keras.optimizers.Adam(1e-3))
model.fit(x_train, epochs=args.epochs, batch_size=args.batch_size)

common.report_knn(model.encoder, (x_train, y_train), (x_test, y_test))
model.encoder.save("byol_encoder.keras")
