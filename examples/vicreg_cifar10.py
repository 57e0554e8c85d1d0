"""VICReg on CIFAR-10 with a CIFAR ResNet-18, then kNN evaluation.

    KERAS_BACKEND=jax python examples/vicreg_cifar10.py --epochs 10 --limit 10000

Reads $KERAS_SSL_DATA_DIR/cifar10.npz when present, else downloads CIFAR-10
through keras.datasets. VICReg goes NaN with too high a learning rate: Adam
at 1e-3 with a short warm-up is safe. The logged `variance` term should
reach ~0 early (every feature's std >= 1).
"""

import common
import keras

from keras_ssl.methods.vicreg import VICReg

args = common.parser(__doc__).parse_args()

(x_train, y_train), (x_test, y_test) = common.load_cifar10(args)

encoder = common.encoder(args)
model = VICReg(encoder, sim_coeff=25.0, std_coeff=25.0, cov_coeff=1.0)
steps = args.epochs * (len(x_train) // args.batch_size)
warmup = max(1, steps // 10)
schedule = keras.optimizers.schedules.CosineDecay(
    0.0, decay_steps=max(1, steps - warmup), warmup_target=1e-3, warmup_steps=warmup
)
model.compile(optimizer=keras.optimizers.Adam(schedule))
model.fit(x_train, epochs=args.epochs, batch_size=args.batch_size)

common.report_knn(model.encoder, (x_train, y_train), (x_test, y_test))
model.encoder.save("vicreg_encoder.keras")
