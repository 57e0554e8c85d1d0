"""Every evaluation protocol on a random-init and a SimCLR-trained encoder (CIFAR-10).

    KERAS_BACKEND=tensorflow python benchmarks/protocols_cifar10.py [--images 10000 --epochs 5]

Prints kNN (k=200, T=0.1), offline linear probe, fine-tuning (all labels and
10 %) and the representation metrics (embedding std, RankMe) for both
encoders, on the CIFAR-10 test set (`--test-images` of it).
"""

import argparse
import time

import keras

import keras_ssl
from keras_ssl import evaluation

parser = argparse.ArgumentParser()
parser.add_argument("--images", type=int, default=10000)
parser.add_argument("--test-images", type=int, default=10000)
parser.add_argument("--epochs", type=int, default=5)
parser.add_argument("--batch-size", type=int, default=256)
parser.add_argument("--width", type=float, default=0.25)
parser.add_argument("--probe-epochs", type=int, default=30)
parser.add_argument("--finetune-epochs", type=int, default=3)
parser.add_argument("--seed", type=int, default=0)
args = parser.parse_args()

keras.utils.set_random_seed(args.seed)
(x_train, y_train), (x_test, y_test) = keras_ssl.data.load("cifar10")
x_train, y_train = x_train[: args.images], y_train[: args.images]
x_test, y_test = x_test[: args.test_images], y_test[: args.test_images]


def encoder():
    return keras_ssl.backbones.resnet18((32, 32, 3), stem="cifar", width=args.width)


def protocols(enc):
    f_train, f_test = evaluation.embed(enc, x_train), evaluation.embed(enc, x_test)
    return {
        "knn": evaluation.knn_accuracy(f_train, y_train, f_test, y_test)["top1"],
        "linear": evaluation.linear_probe(enc, x_train, y_train, x_test, y_test, epochs=args.probe_epochs)["top1"],
        "finetune": evaluation.fine_tune(enc, x_train, y_train, x_test, y_test, epochs=args.finetune_epochs)["top1"],
        "finetune_10%": evaluation.fine_tune(
            enc, x_train, y_train, x_test, y_test, epochs=args.finetune_epochs, label_fraction=0.1
        )["top1"],
        "std": evaluation.embedding_std(f_test),
        "rankme": evaluation.rankme(f_test),
    }


random_init = encoder()
before = protocols(random_init)
model = keras_ssl.SimCLR(encoder(), seed=args.seed)
model.compile(optimizer=keras.optimizers.Adam(2e-3))
start = time.time()
model.fit(x_train, epochs=args.epochs, batch_size=args.batch_size, verbose=2)
seconds = time.time() - start
after = protocols(model.encoder)
print(
    f"backend={keras.backend.backend()} images={args.images} epochs={args.epochs} "
    f"resnet18-cifar width={args.width} pretrain={seconds:.0f}s test_images={len(x_test)}"
)
print(f"{'protocol':14s} {'random-init':>12s} {'simclr':>8s}")
for key in before:
    print(f"{key:14s} {before[key]:12.4f} {after[key]:8.4f}")
