"""Barlow Twins on CIFAR-10 with a CIFAR ResNet-18, then kNN evaluation.

    KERAS_BACKEND=jax python examples/barlow_twins_cifar10.py --epochs 10 --limit 10000

Reads $KERAS_SSL_DATA_DIR/cifar10.npz when present, else downloads CIFAR-10
through keras.datasets. The paper trains with LARS; Adam at 1e-3 is the
usual small-scale substitute. The logged `on_diagonal` term falls first
(the views agree), `off_diagonal` (already times `lambd`) follows.
"""

import common
import keras

from keras_ssl.methods.barlow_twins import BarlowTwins

parser = common.parser(__doc__)
parser.add_argument("--lambd", type=float, default=5e-3)
args = parser.parse_args()

(x_train, y_train), (x_test, y_test) = common.load_cifar10(args)

encoder = common.encoder(args)
model = BarlowTwins(encoder, lambd=args.lambd)
model.compile(optimizer=keras.optimizers.Adam(1e-3))
model.fit(x_train, epochs=args.epochs, batch_size=args.batch_size)

common.report_knn(model.encoder, (x_train, y_train), (x_test, y_test))
model.encoder.save("barlow_twins_encoder.keras")
