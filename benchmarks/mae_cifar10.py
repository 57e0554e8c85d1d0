"""Short MAE quality run on CIFAR-10: kNN and linear probe before and after training.

    KERAS_BACKEND=jax python benchmarks/mae_cifar10.py [--images 10000 --epochs 10]

Prints the random-init and MAE-trained ViT's weighted kNN top-1 (k=200,
T=0.1, cosine) and offline linear-probe top-1 (class-token features) on a
CIFAR-10 test subset, with the budget used. MAE features are known to be
weak under linear/kNN protocols compared to contrastive methods (the paper
fine-tunes); long runs are needed for the gap to open.
"""

import argparse
import time

import keras

import keras_ssl
from keras_ssl.backbones.vit import vit
from keras_ssl.evaluation import embed, knn_accuracy, linear_probe
from keras_ssl.methods.mae import MAE

parser = argparse.ArgumentParser()
parser.add_argument("--images", type=int, default=10000)
parser.add_argument("--test-images", type=int, default=10000)
parser.add_argument("--epochs", type=int, default=10)
parser.add_argument("--batch-size", type=int, default=256)
parser.add_argument("--dim", type=int, default=192)
parser.add_argument("--depth", type=int, default=6)
parser.add_argument("--heads", type=int, default=3)
parser.add_argument("--patch-size", type=int, default=4)
parser.add_argument("--lr", type=float, default=1e-3)
parser.add_argument("--probe-epochs", type=int, default=30)
parser.add_argument("--seed", type=int, default=0)
args = parser.parse_args()

keras.utils.set_random_seed(args.seed)
(x_train, y_train), (x_test, y_test) = keras_ssl.data.load("cifar10")
x_train, y_train = x_train[: args.images], y_train[: args.images]
x_test, y_test = x_test[: args.test_images], y_test[: args.test_images]
encoder = vit(32, args.patch_size, args.dim, args.depth, args.heads)
model = MAE(encoder, mask_ratio=0.75, seed=args.seed)
model.compile(optimizer=keras.optimizers.AdamW(args.lr, weight_decay=0.05))


def scores():
    knn = knn_accuracy(embed(model.encoder, x_train), y_train, embed(model.encoder, x_test), y_test)
    probe = linear_probe(model.encoder, x_train, y_train, x_test, y_test, epochs=args.probe_epochs)
    return knn["top1"], probe["top1"]


before = scores()
start = time.time()
history = model.fit(x_train, epochs=args.epochs, batch_size=args.batch_size, verbose=2)
seconds = time.time() - start
after = scores()
print(
    f"backend={keras.backend.backend()} images={args.images} test={len(x_test)} "
    f"epochs={args.epochs} "
    f"batch={args.batch_size} vit dim={args.dim} depth={args.depth} heads={args.heads} "
    f"patch={args.patch_size} train_time={seconds:.0f}s "
    f"loss {history.history['loss'][0]:.4f} -> {history.history['loss'][-1]:.4f}"
)
print(f"kNN top-1 (k=200, T=0.1) random-init={before[0]:.4f} mae={after[0]:.4f}")
print(f"linear probe top-1 ({args.probe_epochs} epochs) random-init={before[1]:.4f} mae={after[1]:.4f}")
