"""What every CIFAR-10 example shares: flags, data, encoder, kNN report.

Each example imports this file from its own folder (`python examples/x.py`
puts `examples/` first on `sys.path`).
"""

import argparse

import keras_ssl


class _Help(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    pass


def parser(doc, epochs=10, limit=10000, batch_size=256, backbone="resnet18", width=0.5):
    """The shared flags, each with help and its default shown by --help.

    Example:
        >>> args = parser(__doc__, epochs=20).parse_args()
    """
    p = argparse.ArgumentParser(description=doc, formatter_class=_Help)
    p.add_argument("--epochs", type=int, default=epochs, help="passes over the training images")
    p.add_argument("--limit", type=int, default=limit, help="training images used (the first N of 50,000)")
    p.add_argument(
        "--test-limit",
        type=int,
        default=2000,
        help="test images embedded for the kNN check (of 10,000; embedding all costs minutes on CPU)",
    )
    p.add_argument("--batch-size", type=int, default=batch_size, help="images per step")
    p.add_argument(
        "--backbone",
        default=backbone,
        help="tiny, resnet18, resnet34, resnet50, vit_tiny, vit_small, or a keras.applications "
        "model (mobilenet_v3_small, efficientnet_b0, ...; see keras_ssl.backbones.get)",
    )
    p.add_argument("--width", type=float, default=width, help="width multiplier of tiny and the ResNets")
    return p


def load_cifar10(args):
    """CIFAR-10 ($KERAS_SSL_DATA_DIR/cifar10.npz, else downloaded), cut to --limit and --test-limit.

    Example:
        >>> (x_train, y_train), (x_test, y_test) = load_cifar10(args)
    """
    (x_train, y_train), (x_test, y_test) = keras_ssl.data.load("cifar10")
    # CIFAR-10's test split is in random order: its first N images are a fair sample.
    return (x_train[: args.limit], y_train[: args.limit]), (x_test[: args.test_limit], y_test[: args.test_limit])


def encoder(args, any_size=False):
    """The --backbone for 32x32 RGB images (any size for multi-crop methods).

    Example:
        >>> model = keras_ssl.BYOL(encoder(args))
    """
    shape = (None, None, 3) if any_size else (32, 32, 3)
    return keras_ssl.backbones.get(args.backbone, shape, width=args.width)


def report_knn(model_encoder, train, test):
    """Prints weighted kNN accuracy (k=200, T=0.1) of the encoder, and of raw pixels for scale.

    Example:
        >>> report_knn(model.encoder, (x_train, y_train), (x_test, y_test))
    """
    (x_train, y_train), (x_test, y_test) = train, test
    ev = keras_ssl.evaluation
    features = [ev.embed(model_encoder, x) for x in (x_train, x_test)]
    result = ev.knn_accuracy(features[0], y_train, features[1], y_test)
    raw = ev.raw_pixel_knn(x_train, y_train, x_test, y_test)["top1"]
    print(
        f"kNN top-1 {result['top1']:.4f}, top-5 {result['top5']:.4f} ({len(x_train)} train / {len(x_test)} "
        f"test images; raw pixels: {raw:.4f})"
    )
    return result
