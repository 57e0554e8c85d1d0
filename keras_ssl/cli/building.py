"""How `keras-ssl pretrain` builds its model: the encoder, the method's options and views, the compiled method.

`--option NAME=VALUE` sets any constructor argument the method declares
(`method.hyperparameters()`) but those the command sets itself, and
`--local-crops N` gives a multi-crop method N local crops; both are checked
by `check_method_flags` before any data is read.
"""

import ast
import re

import keras

from keras_ssl import backbones, recipes
from keras_ssl.cli.parser import DIGITS
from keras_ssl.methods import METHODS

# Constructor arguments the command sets itself, and what sets them: --option cannot.
SET_BY_THE_COMMAND = {
    "encoder": "--backbone (with --width and --weights)",
    "views": "the method's view recipe with --crop-scale, --no-flip and --local-crops",
    "input_shape": "the data's image shape (--image-size)",
    "image_size": "--image-size",
    "seed": "--seed",
    "value_range": "--value-range",
    "num_samples": "the number of training images (--data, --limit)",
}


def _option_items(items):
    """`{name: value}` of the --option NAME=VALUE items: VALUE a Python literal, else the text itself."""
    options = {}
    for item in items or ():
        name, equals, text = item.partition("=")
        name, text = name.strip(), text.strip()
        if not equals or not name.isidentifier() or not text:
            raise SystemExit(f"keras-ssl: --option {item!r}: expected NAME=VALUE, e.g. --option momentum=0.99.")
        if name in options:
            raise SystemExit(f"keras-ssl: --option {name} is given twice ({options[name]!r} and {text!r}).")
        try:
            options[name] = ast.literal_eval(text)
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            options[name] = text  # a name such as `dcl`: the constructor's own check judges it
    return options


def _method_names(predicate):
    return ", ".join(name for name, method in METHODS.items() if predicate(method))


def _takes_local_crops(method):
    """Whether the method's views take `num_local` local crops (`default_views` raises ValueError if not)."""
    try:
        method.default_views(32, num_local=1, seed=0)
    except ValueError:
        return False
    return True


def check_method_flags(args, method):
    """Stops, before any work, on an --option or --local-crops that `args.method` cannot take.

    Args:
        args: the Namespace of `keras-ssl pretrain`.
        method: the method's class.

    Returns:
        The --option values, `{name: value}`.

    Raises:
        SystemExit: with one line naming the flag and the problem.

    Example:
        >>> from keras_ssl.cli import build_parser
        >>> from keras_ssl.cli.building import check_method_flags
        >>> args = build_parser().parse_args(["pretrain", "--method", "mmcr", "--option", "momentum=0.99"])
        >>> check_method_flags(args, keras_ssl.MMCR)
        {'momentum': 0.99}
    """
    options = _option_items(args.option)
    known = method.hyperparameters()
    for name in options:
        if name in SET_BY_THE_COMMAND:
            raise SystemExit(
                f"keras-ssl: --option {name}: the command sets `{name}` itself, from {SET_BY_THE_COMMAND[name]}."
            )
        if name not in known:
            names = ", ".join(n for n in known if n not in SET_BY_THE_COMMAND)
            raise SystemExit(f"keras-ssl: --option {name}: {method.__name__} takes no `{name}`; its options: {names}.")
    if "temperature" in options and args.temperature is not None:
        raise SystemExit("keras-ssl: --option temperature: --temperature sets it too; pass one of them.")
    if args.local_crops is not None and not _takes_local_crops(method):
        raise SystemExit(
            f"keras-ssl: --local-crops: {args.method}'s views have no local crops; the methods with local "
            f"crops: {_method_names(_takes_local_crops)}."
        )
    return options


def _build_encoder(name, input_shape, width, image_size, weights=None, tokens=False, method=None):
    """The named backbone (`backbones.get`; a token encoder when `tokens`), initialised as `method`'s
    official code does; `input_shape` may hold None."""
    if name.startswith(("vit_", "hub:")) and None in input_shape:
        input_shape = (image_size, image_size, input_shape[-1])
    inits = {}
    if method is not None:
        inits = dict(resnet_init=method.resnet_init, vit_init=method.vit_init, vit_options=dict(method.vit_options))
    try:
        return backbones.get(name, input_shape, width=width, weights=weights, tokens=tokens, **inits)
    except ValueError as e:
        raise SystemExit(f"keras-ssl: --backbone: {e}") from None


def _method_options(args, method, image_shape):
    """Constructor options from the command line and the method's declarations.

    Every method gets its paper's views (`method.default_views`) for the
    data; on digit data flips change the class and small crops lose the
    digit, so there no crop is smaller than 30 % of the image and nothing
    is flipped. --option's values follow; a `num_views` among them also sets
    the number of views, and --local-crops the number of local crops.
    """
    options = check_method_flags(args, method)
    if args.temperature is not None and "temperature" in method.hyperparameters():
        options["temperature"] = args.temperature
    digits = args.data in DIGITS
    scale = args.crop_scale if args.crop_scale is not None else (0.3 if digits else None)
    options["views"] = method.default_views(
        image_shape[0],
        channels=image_shape[-1],
        min_crop_scale=scale,
        horizontal_flip=not (args.no_flip or digits),
        seed=args.seed + 1,
        num_views=options.get("num_views"),
        num_local=args.local_crops,
    )
    return options


def _check_method_data(name, method, d):
    """Stops, before any work, when the method needs what the data cannot give."""
    if method.needs_labels and d.train[1] is None:
        raise SystemExit(
            f"keras-ssl: {name} trains on labelled images: pass --data a labelled dataset (cifar10, mnist, "
            "an .npz with y_train, a folder with one sub-folder per class, or a .csv list with a label column)."
        )


def _build_model(args, method, backbone, image_shape, value_range, num_samples):
    """The method around a new `backbone` encoder, compiled with --recipe's optimizer."""
    try:
        options = _method_options(args, method, image_shape)
        # Multi-crop (a multi-crop method, or views given local crops) feeds the encoder crops of two sizes.
        local = method.local_views or getattr(options["views"], "num_local", 0)
        encoder_input = (None, None, image_shape[-1]) if local else image_shape
        encoder = _build_encoder(
            backbone, encoder_input, args.width, image_shape[0], args.weights, method.token_encoder, method
        )
        if "num_samples" in method.hyperparameters():  # a per-image memory (DeepCluster v2) has a row per image
            options["num_samples"] = num_samples
        model = method(encoder, input_shape=image_shape, seed=args.seed, value_range=value_range, **options)
    except (ValueError, TypeError) as e:
        given = _option_items(args.option)
        if not given:
            raise
        # The constructor's message names its argument when it can; else each --option is a suspect.
        named = [name for name in given if re.search(rf"\b{name}\b", str(e))] or list(given)
        items = " ".join(f"--option {name}={given[name]!r}" for name in named)
        raise SystemExit(f"keras-ssl: {items}: {method.__name__} refuses it: {e}") from None
    if args.recipe == "cpu":
        model.compile(optimizer=keras.optimizers.Adam(args.learning_rate))
    else:  # --batch-size is the global batch; an epoch is ceil(images / batch) steps unless --steps-per-epoch
        steps = args.steps_per_epoch or max(1, -(-num_samples // args.batch_size))
        model.compile(optimizer=recipes.paper_optimizer(args.method, args.batch_size, steps, args.epochs, model=model))
    return model
