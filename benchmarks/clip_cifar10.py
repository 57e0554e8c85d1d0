"""CLIP, SigLIP or SLIP on CIFAR-10 captions: zero-shot accuracy with held-out prompts, retrieval recall.

    KERAS_SSL_DATA_DIR=/work/shared/data KERAS_BACKEND=torch python benchmarks/clip_cifar10.py
    KERAS_SSL_DATA_DIR=/work/shared/data KERAS_BACKEND=torch python benchmarks/clip_cifar10.py --method siglip
    KERAS_SSL_DATA_DIR=/work/shared/data KERAS_BACKEND=torch python benchmarks/clip_cifar10.py --seed 1

Trains a `tiny_encoder` and a small text Transformer on captions built from
the training labels (`cifar10_captions`: 10 templates x 4-5 synonyms per
class), then prints, before and after training:
- zero-shot top-1 on the CIFAR-10 test set with `EVAL_TEMPLATES`, prompts
  that appear in no training caption, and class names only (no synonyms);
- image->text and text->image recall@1/5 on 1000 test pairs with captions
  from another seed: exact pair, and class-level (a hit is any caption of
  the image's class). Exact-pair recall is bounded by the captions, which
  only name the class (about 100 test captions per class).
"""

import argparse
import time

import keras
import numpy as np

import keras_ssl
from keras_ssl.text import (
    CIFAR10_CLASSES,
    EVAL_TEMPLATES,
    Tokenizer,
    cifar10_captions,
)

parser = argparse.ArgumentParser()
parser.add_argument("--method", choices=("clip", "siglip", "slip"), default="clip")
parser.add_argument("--epochs", type=int, default=8)
parser.add_argument("--initial-bias", type=float, default=-10.0, help="SigLIP's initial logit bias (paper: -10)")
parser.add_argument("--limit", type=int, default=20000)
parser.add_argument("--batch-size", type=int, default=128)
parser.add_argument("--width", type=int, default=32)
parser.add_argument("--seed", type=int, default=0, help="initialisation, caption and batch-order seed")
args = parser.parse_args()

keras.utils.set_random_seed(args.seed)
(x_train, y_train), (x_test, y_test) = keras_ssl.data.load("cifar10")
x_train, y_train = x_train[: args.limit], y_train[: args.limit]
captions = cifar10_captions(y_train, seed=args.seed)
tokenizer = Tokenizer(max_length=16).adapt(captions)
pairs_x, pairs_y = x_test[:1000], y_test[:1000]
pair_captions = cifar10_captions(pairs_y, seed=1)

# The same encoders, data, optimiser and budget for each method: only the loss (and SLIP's views) differ.
method = {"clip": keras_ssl.CLIP, "siglip": keras_ssl.SigLIP, "slip": keras_ssl.SLIP}[args.method]
extra = {"initial_bias": args.initial_bias} if args.method == "siglip" else {}
model = method(
    keras_ssl.backbones.tiny_encoder((32, 32, 3), width=args.width),
    tokenizer=tokenizer,
    embed_dim=64,
    text_width=64,
    text_depth=1,
    text_heads=4,
    seed=args.seed,
    **extra,
)
model.compile(optimizer=keras.optimizers.Adam(2e-3))


def report(stage):
    classifier = model.zero_shot_classifier(CIFAR10_CLASSES, templates=EVAL_TEMPLATES)
    probabilities = classifier.predict(x_test.astype("float32") / 255.0, batch_size=1000, verbose=0)
    accuracy = float(np.mean(probabilities.argmax(axis=1) == y_test))
    exact = model.retrieval_recall(pairs_x, pair_captions, ks=(1, 5))
    by_class = model.retrieval_recall(pairs_x, pair_captions, ks=(1, 5), labels=pairs_y)
    print(f"[{stage}] zero-shot top-1 (held-out prompts, 10000 test images): {accuracy:.4f}")
    print(f"[{stage}] exact-pair recall:  " + ", ".join(f"{k} {v:.3f}" for k, v in exact.items()))
    print(f"[{stage}] class-level recall: " + ", ".join(f"{k} {v:.3f}" for k, v in by_class.items()))


report("random init")
start = time.time()
history = model.fit(x_train, captions, epochs=args.epochs, batch_size=args.batch_size, verbose=2)
print(
    f"{args.method}: trained {args.epochs} epochs on {len(x_train)} pairs in {time.time() - start:.0f} s "
    f"({keras.backend.backend()}); final loss {history.history['loss'][-1]:.3f}, "
    f"logit scale {history.history['logit_scale'][-1]:.1f}"
)
report("trained")
