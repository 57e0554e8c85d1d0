"""SimSiam on CIFAR-10 with a CIFAR ResNet-18, then kNN evaluation.

    KERAS_BACKEND=jax python examples/simsiam_cifar10.py --epochs 10 --limit 10000

Reads $KERAS_SSL_DATA_DIR/cifar10.npz when present, else downloads CIFAR-10
through keras.datasets. SGD with momentum as in the paper (lr 0.03 per 256
images, weight decay 5e-4 on CIFAR); watch `z_std`: it should stay near
1/sqrt(projection_dim), a fall towards 0 means collapse.
"""

import common
import keras

from keras_ssl.methods.simsiam import SimSiam

args = common.parser(__doc__).parse_args()

(x_train, y_train), (x_test, y_test) = common.load_cifar10(args)

encoder = common.encoder(args)
model = SimSiam(encoder)
lr = 0.03 * args.batch_size / 256
model.compile(optimizer=keras.optimizers.SGD(lr, momentum=0.9, weight_decay=5e-4))
model.fit(x_train, epochs=args.epochs, batch_size=args.batch_size)

common.report_knn(model.encoder, (x_train, y_train), (x_test, y_test))
model.encoder.save("simsiam_encoder.keras")
