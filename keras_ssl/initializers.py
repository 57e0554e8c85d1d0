"""Weight initialisation conventions: Keras's, PyTorch's, torchvision's ResNet, SimCLR's and Haiku's (BYOL).

Papers' code is PyTorch, whose conventions differ from Keras's, and short runs are sensitive to them (issue 34):
PyTorch's `nn.Conv2d` and `nn.Linear` draw weights from `U(-1/sqrt(fan_in), 1/sqrt(fan_in))` (`kaiming_uniform_`
with `a=sqrt(5)`), a standard deviation about 2.4x smaller than He-normal's for the same layer. Every
initialiser here is one of Keras's own classes with the exact distribution, so a saved model's config needs no
keras_ssl class to load (`backbones.plain_keras` stays plain Keras).

Presets of the `initializer=` option of the ResNets and the MLP heads:

- `"keras"`: He-normal (truncated, fan-in) convolutions, Glorot-uniform Dense kernels, zero biases.
- `"torch"`: PyTorch's layer defaults: `torch_default` kernels, `torch_bias` biases (the heads of
  MoCo, SimSiam, Barlow Twins, VICReg, SwAV... and solo-learn: the heads' default).
- `"torchvision"`: torchvision's ResNet: `kaiming_normal_fan_out` convolutions; Dense layers as
  `"torch"` (its `fc` keeps the default). The ResNets' default: the official code of MoCo, SimSiam,
  Barlow Twins, VICReg, SwAV and DINO trains torchvision's ResNet.
- `"simclr"`: SimCLR's TensorFlow code: `VarianceScaling()` (truncated normal, std `1/sqrt(fan_in)`)
  convolutions, `RandomNormal(0.01)` Dense kernels, zero biases (SimCLR's heads' default).
- `"haiku"`: Haiku's `Conv2D` and `Linear` defaults, BYOL's official code:
  `TruncatedNormal(1/sqrt(fan_in))` (no variance correction), zero biases (BYOL's heads' default).

Any Keras initialiser, its name or config is accepted too: it sets the kernels; biases stay zero.

The ViT's `initializer=` presets (`VIT_PRESETS`, `vit_preset`) are the official ViT codes' own:
timm's (DINO, iBOT), DINOv2's, MSN's, MAE's, I-JEPA's and BEiT's (SimMIM); `CutNormal`, BEiT's
normal cut at one std, is the one initialiser here that is not Keras's (registered, so it loads).
"""

import math

import keras
from keras import ops

PRESETS = ("keras", "torch", "torchvision", "simclr", "haiku")
VIT_PRESETS = ("timm", "dinov2", "msn", "mae", "ijepa", "beit", "keras")
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


def fresh(initializer):
    """A copy of a Keras initialiser object for one weight; a name (or None) as given.

    One unseeded object draws the same values into every weight it makes (a
    seeded one's copies do too, as Keras's seeded initialisers).

    Args:
        initializer: a Keras initialiser, or its name.

    Example:
        >>> init = keras.initializers.RandomNormal(stddev=0.02)
        >>> copy = keras_ssl.initializers.fresh(init)
        >>> copy is not init and copy.get_config() == init.get_config()
        True
    """
    if isinstance(initializer, keras.initializers.Initializer):
        return type(initializer).from_config(initializer.get_config())
    return initializer


def kernel(initializer, layer):
    """A fresh kernel initialiser for one layer under the `initializer=` option.

    Args:
        initializer: a preset (`PRESETS`), a Keras initialiser, its name or config.
        layer: `"conv"` or `"dense"`.

    Returns:
        An initialiser (or Keras's name of one) for that layer alone (`fresh`).

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
    return fresh(keras.initializers.get(check(initializer)))


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


@keras.saving.register_keras_serializable(package="keras_ssl")
class CutNormal(keras.initializers.Initializer):
    """N(0, stddev^2) restricted to `[-cut * stddev, cut * stddev]`, not rescaled: BEiT's `trunc_normal_`.

    BEiT's pre-training code and SimMIM's ViT call timm's `trunc_normal_`
    with the bounds `a=-std, b=std`: one std, where the law's std is
    0.54 `stddev`. Keras's `TruncatedNormal` always cuts at 2 std. Drawn as
    PyTorch draws it: a uniform pushed through the normal's inverse CDF.

    Args:
        stddev: the std of the normal before the cut.
        cut: the bound in units of `stddev`, > 0.
        seed: as for Keras's initialisers.

    Example:
        >>> w = keras_ssl.initializers.CutNormal(0.02, seed=0)((256, 256))
        >>> bool(ops.max(ops.abs(w)) <= 0.02), round(float(ops.std(w)), 4)
        (True, 0.0108)
    """

    def __init__(self, stddev=0.02, cut=1.0, seed=None):
        if not stddev > 0 or not cut > 0:
            raise ValueError(f"`stddev` and `cut` must be > 0, got {stddev} and {cut}.")
        self.stddev, self.cut, self.seed = float(stddev), float(cut), seed
        edge = math.erf(self.cut / math.sqrt(2.0))
        # Keras's own uniform initialiser picks the seed, so `set_random_seed` reaches this one too.
        self._uniform = keras.initializers.RandomUniform(-edge, edge, seed=seed)

    def __call__(self, shape, dtype=None):
        u = self._uniform(shape, dtype="float32")
        return ops.cast(self.stddev * math.sqrt(2.0) * ops.erfinv(u), dtype or keras.backend.floatx())

    def get_config(self):
        return {"stddev": self.stddev, "cut": self.cut, "seed": self.seed}


def vit_preset(preset, channels, patch_size, dim, depth):
    """A `ViT(initializer=)` preset as its layers' initialisers, each drawn as the official code draws it.

    - `"timm"` (DINO's, iBOT's `_init_weights`): Linear kernels
      `trunc_normal_(std=.02)` (`trunc_normal`), biases 0; the patch
      convolution untouched, so PyTorch's `Conv2d` default (`torch_default`,
      `torch_bias`).
    - `"dinov2"`: timm's, with the class token and registers N(0, (1e-6)^2).
    - `"msn"` (MSN's `deit.py`): timm's, but the patch convolution
      `kaiming_normal_(mode="fan_in", nonlinearity="relu")`, bias 0.
    - `"mae"`: Linear kernels `xavier_uniform_` (Glorot-uniform), biases 0;
      the patch kernel `xavier_uniform_` as a `(dim, channels * p * p)`
      matrix (fan-out `dim`, not Keras's `p * p * dim`), its bias PyTorch's.
    - `"ijepa"`: Linear and patch kernels `trunc_normal_(std=.02)`, biases 0 (`helper.init_model`
      redraws every Linear after `fix_init_weight`, so no output is rescaled).
    - `"beit"` (SimMIM's ViT): the same, every draw `CutNormal` (cut at 1 std), each block's attention
      output and second MLP kernel divided by `sqrt(2 * layer)` (1-based), as `fix_init_weight`.
    - `"keras"`: Keras's defaults, Glorot-uniform kernels (the former ViT).

    Class token, positions and registers: N(0, 0.02^2) (DINOv2's class
    token and registers N(0, (1e-6)^2), BEiT's `CutNormal`); the registers as the
    class token.

    Args:
        preset: one of `VIT_PRESETS`.
        channels, patch_size, dim, depth: the ViT's.

    Returns:
        `{"patch_kernel", "patch_bias", "token", "position", "kernel": initialiser, "outputs": [one per block]}`;
        an initialiser may be Keras's name of one, or None for the layer's default.

    Example:
        >>> init = keras_ssl.initializers.vit_preset("beit", channels=3, patch_size=4, dim=64, depth=12)
        >>> round(init["outputs"][0].get_config()["stddev"], 4), round(init["outputs"][-1].get_config()["stddev"], 4)
        (0.0141, 0.0041)
        >>> keras_ssl.initializers.vit_preset("deit", 3, 4, 64, 12)
        Traceback (most recent call last):
        ...
        ValueError: `initializer` must be one of ('timm', 'dinov2', 'msn', 'mae', 'ijepa', 'beit', 'keras'), got 'deit'.
    """
    if not isinstance(preset, str) or preset not in VIT_PRESETS:
        raise ValueError(f"`initializer` must be one of {VIT_PRESETS}, got {preset!r}.")
    fan_in = int(channels) * int(patch_size) ** 2
    if preset == "keras":  # names, not objects: Keras seeds them as it did before the option existed
        return dict(
            patch_kernel="glorot_uniform",
            patch_bias="zeros",
            token=None,
            position=None,
            kernel="glorot_uniform",
            outputs=["glorot_uniform"] * depth,
        )
    if preset in ("ijepa", "beit"):
        normal = trunc_normal if preset == "ijepa" else CutNormal
        rescale = preset == "beit"  # BEiT keeps fix_init_weight's outputs; I-JEPA's init_model redraws them
        return dict(
            patch_kernel=normal(0.02),
            patch_bias="zeros",
            token=normal(0.02),
            position=normal(0.02),
            kernel=normal(0.02),
            outputs=[normal(0.02 / math.sqrt(2.0 * layer if rescale else 1.0)) for layer in range(1, depth + 1)],
        )
    init = dict(
        patch_kernel=torch_default(),
        patch_bias=torch_bias(fan_in),
        token=trunc_normal(),
        position=trunc_normal(),
        kernel=trunc_normal(),
        outputs=[trunc_normal() for _ in range(depth)],
    )
    if preset == "dinov2":
        init["token"] = keras.initializers.RandomNormal(stddev=1e-6)
    elif preset == "msn":
        init["patch_kernel"] = keras.initializers.VarianceScaling(2.0, "fan_in", "untruncated_normal")
        init["patch_bias"] = "zeros"
    elif preset == "mae":
        bound = math.sqrt(6.0 / (fan_in + int(dim)))
        init |= dict(
            patch_kernel=keras.initializers.RandomUniform(-bound, bound),
            kernel="glorot_uniform",
            outputs=["glorot_uniform"] * depth,
        )
    return init
