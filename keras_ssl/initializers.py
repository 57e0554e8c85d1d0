"""Weight initialisation conventions: Keras's, PyTorch's, torchvision's ResNet, SimCLR's and Haiku's (BYOL).

Papers' code is PyTorch, whose conventions differ from Keras's, and short
runs are sensitive to them (issue 34): PyTorch's `nn.Conv2d` and `nn.Linear`
draw weights from `U(-1/sqrt(fan_in), 1/sqrt(fan_in))` (`kaiming_uniform_`
with `a=sqrt(5)`), a standard deviation about 2.4x smaller than He-normal's
for the same layer. Every initialiser here is one of Keras's own classes
with the exact distribution, so a saved model's config needs no keras_ssl
class to load (`backbones.plain_keras` stays plain Keras).

Presets of the `initializer=` option of the ResNets and the MLP heads:

- `"keras"`: He-normal (truncated, fan-in) convolutions, Glorot-uniform
  Dense kernels, zero biases.
- `"torch"`: PyTorch's layer defaults: `torch_default` kernels, `torch_bias`
  biases (the heads of MoCo, SimSiam, Barlow Twins, VICReg, SwAV... and
  solo-learn: the heads' default).
- `"torchvision"`: torchvision's ResNet: `kaiming_normal_fan_out`
  convolutions; Dense layers as `"torch"` (its `fc` keeps the default). The
  ResNets' default: the official code of MoCo, SimSiam, Barlow Twins,
  VICReg, SwAV and DINO trains torchvision's ResNet.
- `"simclr"`: SimCLR's TensorFlow code: `VarianceScaling()` (truncated
  normal, std `1/sqrt(fan_in)`) convolutions, `RandomNormal(0.01)` Dense
  kernels, zero biases (SimCLR's heads' default).
- `"haiku"`: Haiku's `Conv2D` and `Linear` defaults, BYOL's official code:
  `TruncatedNormal(1/sqrt(fan_in))` (no variance correction), zero biases
  (BYOL's heads' default).

Any Keras initialiser (or its name or config) is accepted too; it sets the
kernels, and biases stay zero.
"""

import math

import keras

PRESETS = ("keras", "torch", "torchvision", "simclr", "haiku")
_TRUNCATED_STD = 0.87962566103423978  # the std of a unit normal cut at +-2, as Keras's VarianceScaling uses


def torch_default(seed=None):
    """PyTorch's default kernel init of `nn.Conv2d` and `nn.Linear`: `U(-1/sqrt(fan_in), 1/sqrt(fan_in))`.

    `kaiming_uniform_(a=sqrt(5))` has bound `gain * sqrt(3 / fan_in)` with
    `gain = sqrt(2 / (1 + 5))`, i.e. `1/sqrt(fan_in)`; Keras's
    `VarianceScaling(1/3, "fan_in", "uniform")` has bound `sqrt(3 * 1/3 / fan_in)`,
    the same. Fan-in is `kh * kw * in_channels` for a convolution, as in PyTorch.

    Args:
        seed: as for Keras's initialisers.

    Returns:
        A `keras.initializers.VarianceScaling`.

    Example:
        >>> w = keras_ssl.initializers.torch_default(seed=0)((3, 3, 16, 32))   # fan_in 144
        >>> bool(ops.max(ops.abs(w)) <= 1 / 12)
        True
    """
    return keras.initializers.VarianceScaling(1.0 / 3.0, mode="fan_in", distribution="uniform", seed=seed)


def trunc_normal(stddev=0.02, seed=None):
    """The official ViT codes' `trunc_normal_(std=stddev)`: a fresh initialiser for one weight.

    PyTorch's and timm's `trunc_normal_` cut at the absolute bounds +-2, which
    at std 0.02 lie 100 std out: the distribution is N(0, stddev^2). Keras's
    `TruncatedNormal(stddev)` cuts at 2 std instead, which narrows it to
    0.88 stddev. Each call returns a new initialiser, because one unseeded
    Keras initialiser draws the same values for every weight it fills.

    Args:
        stddev: in (0, 0.25], where the cut at +-2 lies 8 std or more out.
        seed: as for Keras's initialisers.

    Returns:
        A `keras.initializers.RandomNormal`.

    Example:
        >>> w = keras_ssl.initializers.trunc_normal(seed=0)((256, 256))
        >>> round(float(ops.std(w)), 3)
        0.02
    """
    if not 0 < stddev <= 0.25:
        raise ValueError(f"`stddev` must be in (0, 0.25] (the cut at +-2 then changes nothing), got {stddev}.")
    return keras.initializers.RandomNormal(stddev=stddev, seed=seed)


def torch_bias(fan_in, seed=None):
    """PyTorch's default bias init of `nn.Conv2d` and `nn.Linear`: `U(-1/sqrt(fan_in), 1/sqrt(fan_in))`.

    The bound depends on the kernel's fan-in, which a bias's shape does not
    show, so it is given.

    Args:
        fan_in: the layer's input features (times the kernel area for a convolution), >= 1.
        seed: as for Keras's initialisers.

    Returns:
        A `keras.initializers.RandomUniform`.

    Example:
        >>> b = keras_ssl.initializers.torch_bias(fan_in=64, seed=0)((32,))
        >>> bool(ops.max(ops.abs(b)) <= 1 / 8)
        True
    """
    if not int(fan_in) >= 1:
        raise ValueError(f"`fan_in` must be >= 1, got {fan_in}.")
    bound = 1.0 / math.sqrt(int(fan_in))
    return keras.initializers.RandomUniform(-bound, bound, seed=seed)


def kaiming_normal_fan_out(seed=None):
    """torchvision's ResNet convolutions: `kaiming_normal_(mode="fan_out", nonlinearity="relu")`.

    An untruncated normal of std `sqrt(2 / fan_out)`, `fan_out = kh * kw * out_channels`
    (Keras's `he_normal` is truncated and uses the fan-in).

    Args:
        seed: as for Keras's initialisers.

    Returns:
        A `keras.initializers.VarianceScaling`.

    Example:
        >>> init = keras_ssl.initializers.kaiming_normal_fan_out(seed=0)
        >>> init.get_config()["mode"], init.get_config()["distribution"]
        ('fan_out', 'untruncated_normal')
    """
    return keras.initializers.VarianceScaling(2.0, mode="fan_out", distribution="untruncated_normal", seed=seed)


def haiku_default(seed=None):
    """Haiku's `Linear` and `Conv2D` default: `TruncatedNormal(stddev=1/sqrt(fan_in))`, cut at 2 std.

    Haiku scales the unit truncated normal by `1/sqrt(fan_in)` without the
    variance correction, so its std is 0.8796 of that. Keras's
    `VarianceScaling(s, "fan_in", "truncated_normal")` divides its std
    `sqrt(s/fan_in)` by 0.8796 first; `s = 0.8796**2` gives Haiku's draw.

    Args:
        seed: as for Keras's initialisers.

    Returns:
        A `keras.initializers.VarianceScaling`.

    Example:
        >>> w = keras_ssl.initializers.haiku_default(seed=0)((256, 64))   # fan_in 256: cut at +-2/16
        >>> bool(ops.max(ops.abs(w)) <= 0.125)
        True
    """
    return keras.initializers.VarianceScaling(
        _TRUNCATED_STD**2, mode="fan_in", distribution="truncated_normal", seed=seed
    )


# Per preset: a fresh kernel initialiser of a convolution and of a Dense layer. "keras" gives Keras's
# strings, so its layers draw exactly as the former defaults did (same classes, same seeds in the same order).
_KERNELS = {
    "keras": {"conv": lambda: "he_normal", "dense": lambda: "glorot_uniform"},
    "torch": {"conv": torch_default, "dense": torch_default},
    "torchvision": {"conv": kaiming_normal_fan_out, "dense": torch_default},
    "simclr": {
        "conv": lambda: keras.initializers.VarianceScaling(1.0, "fan_in", "truncated_normal"),
        "dense": lambda: keras.initializers.RandomNormal(stddev=0.01),
    },
    "haiku": {"conv": haiku_default, "dense": haiku_default},
}


def check(initializer, name="initializer"):
    """`initializer` if it is a preset, a Keras initialiser, its name or config; else a clear error.

    Args:
        initializer: the `initializer=` option.
        name: the option's name in the error (`head_initializer` for a method's).

    Returns:
        `initializer` unchanged.

    Example:
        >>> keras_ssl.initializers.check("torch")
        'torch'
        >>> keras_ssl.initializers.check("pytorch")
        Traceback (most recent call last):
        ...
        ValueError: `initializer` must be one of ('keras', 'torch', 'torchvision', 'simclr', 'haiku'), a Keras initializer, its name or config; got 'pytorch'.
    """
    if isinstance(initializer, str) and initializer in PRESETS:
        return initializer
    try:
        if keras.initializers.get(initializer) is not None:
            return initializer
    except (ValueError, TypeError):
        pass
    raise ValueError(
        f"`{name}` must be one of {PRESETS}, a Keras initializer, its name or config; got {initializer!r}."
    )


def kernel(initializer, layer):
    """A fresh kernel initialiser for one layer under the `initializer=` option.

    Args:
        initializer: a preset (`PRESETS`), a Keras initialiser, its name or config.
        layer: `"conv"` or `"dense"`.

    Returns:
        An initialiser (or Keras's name of one) for that layer alone: a
        Keras initialiser object is copied, so that unseeded it draws
        different values for each layer.

    Example:
        >>> keras_ssl.initializers.kernel("keras", "conv"), keras_ssl.initializers.kernel("keras", "dense")
        ('he_normal', 'glorot_uniform')
        >>> type(keras_ssl.initializers.kernel("torch", "dense")).__name__
        'VarianceScaling'
    """
    if layer not in ("conv", "dense"):
        raise ValueError(f"`layer` must be 'conv' or 'dense', got {layer!r}.")
    if isinstance(initializer, str) and initializer in PRESETS:
        return _KERNELS[initializer][layer]()
    if isinstance(initializer, keras.initializers.Initializer):
        return type(initializer).from_config(initializer.get_config())
    return keras.initializers.get(check(initializer))


def bias(initializer, fan_in):
    """The bias initialiser of a layer of `fan_in` inputs under the `initializer=` option.

    Args:
        initializer: as for `kernel`.
        fan_in: the layer's fan-in.

    Returns:
        `torch_bias(fan_in)` for "torch" and "torchvision", else None (Keras's zeros).

    Example:
        >>> keras_ssl.initializers.bias("keras", 64) is None
        True
        >>> keras_ssl.initializers.bias("torch", 64).get_config()["maxval"]
        0.125
    """
    return torch_bias(fan_in) if initializer in ("torch", "torchvision") else None


def serialize(initializer):
    """The `initializer=` option as a config value: a preset or name as is, an initialiser as its config.

    Args:
        initializer: as for `kernel`.

    Returns:
        A string or a dict that `kernel` takes back.

    Example:
        >>> keras_ssl.initializers.serialize("torch")
        'torch'
        >>> keras_ssl.initializers.serialize(keras.initializers.Orthogonal())["class_name"]
        'Orthogonal'
    """
    if isinstance(initializer, keras.initializers.Initializer):
        return keras.initializers.serialize(initializer)
    return initializer
