"""MoCo v2 (or v3) on CIFAR-10 with a CIFAR ResNet-18, then kNN evaluation.

    KERAS_BACKEND=jax python examples/moco_cifar10.py --version 2 --epochs 10

MoCo v2 keeps a queue of 4096 keys and simulates shuffle-BN on one device
(`split_batch_norm`, on by default for v2). Reads
$KERAS_SSL_DATA_DIR/cifar10.npz when present, else downloads CIFAR-10.
"""

import common
import keras

from keras_ssl.methods.moco_v2 import MoCoV2
from keras_ssl.methods.moco_v3 import MoCoV3

parser = common.parser(__doc__)
parser.add_argument("--version", type=int, default=2, choices=(2, 3))
args = parser.parse_args()

(x_train, y_train), (x_test, y_test) = common.load_cifar10(args)

encoder = common.encoder(args)
model = MoCoV2(encoder, queue_size=4096) if args.version == 2 else MoCoV3(encoder)
model.compile(optimizer=keras.optimizers.SGD(0.06, momentum=0.9))
model.fit(x_train, epochs=args.epochs, batch_size=args.batch_size)

common.report_knn(model.encoder, (x_train, y_train), (x_test, y_test))
model.encoder.save(f"moco_v{args.version}_encoder.keras")
