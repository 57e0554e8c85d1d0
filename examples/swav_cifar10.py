"""SwAV on CIFAR-10 with multi-crop and a small conv encoder, then kNN evaluation.

    KERAS_BACKEND=jax python examples/swav_cifar10.py --epochs 10 --limit 10000

Reads $KERAS_SSL_DATA_DIR/cifar10.npz when present, else downloads CIFAR-10
through keras.datasets. The encoder takes any image size (input
`(None, None, 3)`), so the 32px global crops and 16px local crops each run
through it once per step; `input_shape` tells SwAV the training image size.
"""

import common
import keras

from keras_ssl.methods.swav import SwAV

args = common.parser(__doc__, backbone="tiny", width=1.0).parse_args()

(x_train, y_train), (x_test, y_test) = common.load_cifar10(args)

encoder = common.encoder(args, any_size=True)  # multi-crop: 32 and 16 px crops
model = SwAV(
    encoder,
    input_shape=(32, 32, 3),
    num_prototypes=512,  # default views: 2 global, 4 local 16 px
    freeze_prototypes_steps=len(x_train) // args.batch_size,  # the first epoch, as in the paper
    queue_size=0 if args.batch_size >= 256 else 3840,  # small batches need the queue
)
model.compile(optimizer=keras.optimizers.Adam(1e-3))
model.fit(x_train, epochs=args.epochs, batch_size=args.batch_size)

common.report_knn(model.encoder, (x_train, y_train), (x_test, y_test))
model.encoder.save("swav_encoder.keras")
