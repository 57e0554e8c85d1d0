"""Each method's paper recipe: optimiser, learning rate at batch 256, batch rule, weight decay, warm-up.

`RECIPES` maps the CLI's method names to the optimiser its paper or
official code trains with: the CIFAR recipe where the paper or its code
gives one, else solo-learn's CIFAR config (PyTorch, the papers' terms),
else the paper's ImageNet recipe (the ViT methods). Every weight decay is
in the source's own terms: coupled L2 (`torch.optim.SGD`/`Adam`, LARS) for
"sgd", "adam" and "lars", decoupled for "adamw" (see `keras_ssl.optimizers`).
`paper_optimizer` builds it with its warm-up + cosine schedule, and the
ViT methods' weight decay with its cosine from 0.04 to 0.4.
"""

import dataclasses

from keras_ssl.optimizers import LARS, SGD, Adam, scale_learning_rate
from keras_ssl.schedules import CosineWeightDecay, WarmupCosine, WarmupMultiStep


@dataclasses.dataclass(frozen=True)
class Recipe:
    """One method's pretraining optimiser, as its source gives it.

    Args:
        optimizer: `"lars"`, `"sgd"`, `"adam"` (L2 coupled, as PyTorch's) or
            `"adamw"` (decoupled).
        learning_rate: the peak rate at batch 256.
        weight_decay: in the source's terms (coupled for lars/sgd/adam).
        source: where the numbers come from, in one line.
        scaling: the batch rule of `scale_learning_rate` (`"linear"`, `"sqrt"`),
            or `"none"`: the same rate at every batch size.
        warmup_epochs: linear warm-up from 0, then cosine.
        final_fraction: the cosine ends at this fraction of the peak.
        options: the optimiser's other arguments (trust coefficient, betas...).
        weight_decay_end: the ViT methods' decay schedule: a cosine from
            `weight_decay` at the first step to this at the last
            (`keras_ssl.schedules.CosineWeightDecay`); `None`: constant.
        cosine_stretch: the cosines (rate and decay) span this multiple of
            the run, which stops before their end (MSN: 1.25).
        warmup_start_fraction: the warm-up starts at this fraction of the
            peak (I-JEPA's and MSN's `start_lr`).
        step_offset: the schedules run this many steps ahead of the
            optimizer (I-JEPA and MSN step their schedulers before each
            update: 1; SimMIM after it: -1).
        linspace_warmup: the warm-up is `np.linspace(start, peak, W)`, at the
            peak one step early (DINO's, iBOT's and DINOv2's `cosine_scheduler`).
        layer_decay: layer-wise rate decay of a ViT encoder
            (`backbones.ViT.layer_decay_multipliers`; DINOv2 0.9), or None.
        patch_embed_multiplier: with it, the patch embedding's extra rate
            factor (DINOv2's `patch_embed_lr_mult` 0.2).
        milestones: instead of the cosine, the rate drops by `gamma` at
            these fractions of the run (SimMIM: 700 of 800 epochs, 0.875;
            `keras_ssl.schedules.WarmupMultiStep`).
        gamma: the factor per milestone.

    Example:
        >>> recipe = keras_ssl.recipes.RECIPES["simclr"]
        >>> recipe.optimizer, recipe.learning_rate, recipe.weight_decay, recipe.decay
        ('lars', 1.0, 0.0001, 'coupled')
        >>> keras_ssl.recipes.RECIPES["dinov2"].weight_decay_end
        0.4
    """

    optimizer: str
    learning_rate: float
    weight_decay: float
    source: str
    scaling: str = "linear"
    warmup_epochs: int = 10
    final_fraction: float = 0.0
    options: dict = dataclasses.field(default_factory=dict)
    weight_decay_end: float | None = None
    cosine_stretch: float = 1.0
    warmup_start_fraction: float = 0.0
    step_offset: int = 0
    linspace_warmup: bool = False
    layer_decay: float | None = None
    patch_embed_multiplier: float = 1.0
    milestones: tuple = ()
    gamma: float = 0.1

    @property
    def decay(self):
        """`"decoupled"` (AdamW) or `"coupled"` (L2 in the gradient: SGD, Adam, LARS)."""
        return "decoupled" if self.optimizer == "adamw" else "coupled"


_SOLO = "solo-learn scripts/pretrain/cifar/{}.yaml"
_SOLO_LARS = dict(trust_coefficient=0.02, clip=True)  # solo-learn's LARS: eta 0.02, clip_lr
_ALL = dict(exclude_bias_and_norm=False)  # `torch.optim.SGD(model.parameters())`: biases and norms decay too
_SIMSIAM = (
    "SimSiam paper, CIFAR appendix (lr 0.03 x batch/256, wd 5e-4, batch 512, cosine, no warm-up); "
    "all parameters decayed (main_simsiam.py)"
)
RECIPES = {
    "simclr": Recipe(
        "lars",
        1.0,
        1e-4,
        "SimCLR README's CIFAR-10 command (LARS lr 1.0 linear, wd 1e-4, batch 512); run.py: 10 warm-up epochs",
    ),
    "moco": Recipe(
        "sgd",
        0.03,
        5e-4,
        "MoCo authors' CIFAR-10 demo (moco colab): lr 0.06 at batch 512, wd 5e-4 on all parameters, cosine",
        warmup_epochs=0,
        options=_ALL,
    ),
    "moco_v3": Recipe("lars", 0.3, 1e-6, _SOLO.format("mocov3"), options=_SOLO_LARS),
    "byol": Recipe("lars", 1.0, 1e-5, _SOLO.format("byol"), options=_SOLO_LARS),
    "nnclr": Recipe("lars", 0.4, 1e-5, _SOLO.format("nnclr"), options=_SOLO_LARS),
    "simsiam": Recipe("sgd", 0.03, 5e-4, _SIMSIAM, warmup_epochs=0, options=_ALL),
    "barlow_twins": Recipe("lars", 0.3, 1e-4, _SOLO.format("barlow"), options=_SOLO_LARS),
    "vicreg": Recipe("lars", 0.3, 1e-4, _SOLO.format("vicreg"), options=_SOLO_LARS),
    "swav": Recipe("lars", 0.6, 1e-6, _SOLO.format("swav"), options=_SOLO_LARS),
    "dino": Recipe(
        "sgd",
        0.03,
        1e-4,
        "DINO README's ResNet-50 command (SGD lr 0.03 linear, wd 1e-4 constant); main_dino.py: 10 warm-up "
        "epochs (linspace), min_lr 1e-6, bias and norm undecayed (ViTs: AdamW 5e-4, wd 0.04 -> 0.4)",
        final_fraction=1e-6 / 0.03,
        linspace_warmup=True,
        options=dict(clipnorm=3.0),  # utils.clip_gradients: each parameter's gradient to norm 3
    ),
    "mae": Recipe(
        "adamw",
        1.5e-4,
        0.05,
        "MAE main_pretrain.py / paper Table 8: blr 1.5e-4 linear, AdamW betas (0.9, 0.95), 40 warm-up epochs",
        warmup_epochs=40,
        options=dict(beta_2=0.95),
    ),
    "ibot": Recipe(
        "adamw",
        5e-4,
        0.04,
        "iBOT main_ibot.py defaults: lr 5e-4 linear, min_lr 1e-6, wd cosine 0.04 -> 0.4 (cosine_scheduler, set "
        "every step), 10 warm-up (linspace)",
        weight_decay_end=0.4,
        final_fraction=1e-6 / 5e-4,
        linspace_warmup=True,
        options=dict(clipnorm=3.0),
    ),
    "dinov2": Recipe(
        "adamw",
        2e-3,
        0.04,
        "DINOv2 ssl_default_config.yaml: base_lr 0.004 at batch 1024, sqrt_wrt_1024, min_lr 1e-6, wd cosine "
        "0.04 -> 0.4 (weight_decay_end), 10 warm-up (linspace), layerwise_decay 0.9, patch_embed_lr_mult 0.2",
        scaling="sqrt",
        weight_decay_end=0.4,
        final_fraction=1e-6 / 4e-3,
        linspace_warmup=True,
        options=dict(global_clipnorm=3.0),  # clip_grad 3.0, there per module (backbone, heads)
        layer_decay=0.9,
        patch_embed_multiplier=0.2,
    ),
    "ijepa": Recipe(
        "adamw",
        1.25e-4,
        0.04,
        "I-JEPA in1k_vith14_ep300.yaml: lr 1e-3 at batch 2048 (ours linear), start_lr 2e-4, final_lr 1e-6, wd "
        "cosine 0.04 -> 0.4 (final_weight_decay), 40 warm-up; schedulers step before each update",
        warmup_epochs=40,
        weight_decay_end=0.4,
        final_fraction=1e-3,
        warmup_start_fraction=0.2,
        step_offset=1,
    ),
    "simmim": Recipe(
        "adamw",
        5e-5,
        0.05,
        "SimMIM simmim_pretrain__vit_base__img224__800ep.yaml: BASE_LR 1e-4 per batch 512, WARMUP_LR 5e-7, "
        "10 warm-up, multistep x0.1 at epoch 700; config.py: CLIP_GRAD 5.0; main_simmim.py: step_update after "
        "each update",
        warmup_start_fraction=5e-7 / 1e-4,
        step_offset=-1,
        milestones=(700 / 800,),
        options=dict(global_clipnorm=5.0),  # torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
    ),
    "msn": Recipe(
        "adamw",
        2.5e-4,
        0.04,
        "MSN msn_vits16.yaml: lr 1e-3 at batch 1024 (ours linear), start_lr 2e-4, final_lr 1e-6, wd cosine "
        "0.04 -> 0.4 (final_weight_decay), 15 warm-up; msn_train.py: both cosines span 1.25x the run, "
        "schedulers step before each update",
        warmup_epochs=15,
        weight_decay_end=0.4,
        cosine_stretch=1.25,
        final_fraction=1e-3,
        warmup_start_fraction=0.2,
        step_offset=1,
        options=dict(global_clipnorm=3.0),  # clip_grad 3.0, there over the encoder's parameters only
    ),
    "fastsiam": Recipe(
        "sgd", 0.03, 5e-4, "as SimSiam (FastSiam keeps SimSiam's optimiser)", warmup_epochs=0, options=_ALL
    ),
    "nnbyol": Recipe("lars", 1.0, 1e-5, _SOLO.format("nnbyol"), options=_SOLO_LARS),
    "nnsiam": Recipe("sgd", 0.5, 1e-5, _SOLO.format("nnsiam") + "; all parameters decayed", options=_ALL),
    "ressl": Recipe("sgd", 0.05, 1e-4, _SOLO.format("ressl") + "; all parameters decayed", options=_ALL),
    "mmcr": Recipe(
        "adam",
        1e-3,
        1e-6,
        "MMCR mmcr/cifar_stl/train.py: torch Adam lr 1e-3 constant, not scaled (batch 32 x 40 views), wd 1e-6 on all",
        scaling="none",
        warmup_epochs=0,
        final_fraction=1.0,
        options=_ALL,
    ),
    "wmse": Recipe("adam", 2e-3, 1e-6, _SOLO.format("wmse") + ": torch Adam, L2 weight decay"),
    "tico": Recipe(
        "lars",
        0.2,
        1.5e-6,
        "lightly benchmarks/imagenet/resnet50/tico.py (BYOL's 100-epoch config): LARS 0.2 linear, 10 warm-up",
    ),
    "vibcreg": Recipe(
        "lars", 0.3, 1e-4, _SOLO.format("vibcreg") + " (eta 0.02, unclipped)", options=dict(trust_coefficient=0.02)
    ),
    "supcon": Recipe(
        "sgd",
        0.125,
        1e-4,
        "SupContrast README (CIFAR: batch 1024, lr 0.5, cosine, --warm) and main_supcon.py (wd 1e-4, all parameters)",
        options=_ALL,
    ),
    "deepclusterv2": Recipe(
        "lars",
        0.6,
        1e-6,
        _SOLO.format("deepclusterv2") + ": 11 warm-up epochs, min_lr 6e-4",
        warmup_epochs=11,
        final_fraction=1e-3,
        options=_SOLO_LARS,
    ),
}


def paper_optimizer(name, batch_size, steps_per_epoch, epochs, warmup_epochs=None, model=None):
    """The optimiser of method `name`'s paper, scaled to the batch, with its warm-up + cosine schedule.

    Args:
        name: a CLI method name (a key of `RECIPES`).
        batch_size: the global batch size (the rate follows the recipe's
            batch rule from its value at 256).
        steps_per_epoch: optimizer steps per epoch.
        epochs: epochs of the run; the cosines (rate, and the decay where
            the recipe has `weight_decay_end`) end at its last step (MSN's:
            at 1.25 times it).
        warmup_epochs: warm-up length; default the recipe's, but at most a
            tenth of the run (the papers warm up over 10 % of their runs or
            less), so a short run is not all warm-up.
        model: the method the optimiser will train. A recipe with
            `layer_decay` (DINOv2) applies it to the model's keras_ssl `ViT`
            encoder, and places a mask token of the model with the embeddings;
            with no model, or another encoder, none is applied.

    Returns:
        A `keras_ssl.optimizers` `LARS`, `SGD` or `Adam` with the recipe's
        weight decay in PyTorch's semantics (a `CosineWeightDecay` where it
        has `weight_decay_end`).

    Example:
        >>> optimizer = keras_ssl.recipes.paper_optimizer("simsiam", 512, steps_per_epoch=97, epochs=800)
        >>> type(optimizer).__name__, optimizer.coupled_weight_decay, round(float(optimizer.learning_rate), 6)
        ('SGD', 0.0005, 0.06)

        DINOv2's decay rises from 0.04 to 0.4 over the run's 1000 steps:

        >>> wd = keras_ssl.recipes.paper_optimizer("dinov2", 1024, steps_per_epoch=10, epochs=100).adam_weight_decay
        >>> [round(float(wd(step)), 4) for step in (0, 500, 1000)]
        [0.04, 0.22, 0.4]
    """
    if name not in RECIPES:
        raise ValueError(f"No paper recipe for method {name!r}; the recipes are {sorted(RECIPES)}.")
    for label, value in (("batch_size", batch_size), ("steps_per_epoch", steps_per_epoch), ("epochs", epochs)):
        if int(value) != value or value < 1:
            raise ValueError(f"`{label}` must be a positive integer, got {value!r}.")
    recipe = RECIPES[name]
    peak = recipe.learning_rate
    if recipe.scaling != "none":
        peak = scale_learning_rate(peak, batch_size, recipe.scaling)
    total = epochs * steps_per_epoch
    if warmup_epochs is None:
        warmup = min(recipe.warmup_epochs * steps_per_epoch, total // 10)
    else:
        warmup = int(round(warmup_epochs * steps_per_epoch))
    cosine = int(total * recipe.cosine_stretch)  # MSN's int(1.25 * num_epochs * iterations_per_epoch)
    if recipe.milestones:
        milestones = [max(int(round(f * total)), warmup) for f in recipe.milestones]
        initial = peak * recipe.warmup_start_fraction
        schedule = WarmupMultiStep(peak, milestones, recipe.gamma, warmup, initial, step_offset=recipe.step_offset)
    else:
        schedule = WarmupCosine(
            peak,
            cosine,
            warmup_steps=warmup,
            final=peak * recipe.final_fraction,
            initial=peak * recipe.warmup_start_fraction,
            step_offset=recipe.step_offset,
            linspace_warmup=recipe.linspace_warmup,
        )
    decay = recipe.weight_decay
    if recipe.weight_decay_end is not None:
        decay = CosineWeightDecay(recipe.weight_decay, recipe.weight_decay_end, cosine, recipe.step_offset)
    options = dict(recipe.options)
    encoder = getattr(model, "encoder", None)
    if recipe.layer_decay is not None and hasattr(encoder, "layer_decay_multipliers"):
        embeddings = [model.mask_token] if hasattr(model, "mask_token") else []
        options["lr_multipliers"] = encoder.layer_decay_multipliers(
            recipe.layer_decay, recipe.patch_embed_multiplier, embeddings
        )
    if recipe.optimizer == "lars":
        return LARS(schedule, weight_decay=decay, **options)
    if recipe.optimizer == "sgd":
        return SGD(schedule, **{"momentum": 0.9, **options}, weight_decay=decay)
    decoupled = recipe.optimizer == "adamw"
    return Adam(schedule, weight_decay=decay, decoupled_weight_decay=decoupled, **options)


def _number(value):
    """1e-4, 1.25e-4, 0.05, 0.3: short, and exact for the recipes' values."""
    if 0 < value < 1e-2:
        mantissa, exponent = f"{value:.3e}".split("e")
        return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"
    return f"{value:g}"


def _optimiser(recipe):
    """The optimiser column: its name and every option that differs from the usual one."""
    o = {"trust_coefficient": 1e-3, "clip": False, "beta_2": 0.999, "exclude_bias_and_norm": True, **recipe.options}
    name = {"lars": "LARS", "sgd": "SGD", "adam": "Adam", "adamw": "AdamW"}[recipe.optimizer]
    extra = []
    if recipe.optimizer == "lars":
        extra.append(f"eta {_number(o['trust_coefficient'])}" + (", clipped" if o["clip"] else ""))
    if recipe.optimizer in ("lars", "sgd"):
        extra.append("momentum 0.9")
    if o["beta_2"] != 0.999:
        extra.append(f"beta_2 {o['beta_2']}")
    if not o["exclude_bias_and_norm"]:
        extra.append("biases and norms decayed too")
    if "clipnorm" in o:
        extra.append(f"each gradient clipped to norm {o['clipnorm']:g}")
    if "global_clipnorm" in o:
        extra.append(f"gradients clipped to global norm {o['global_clipnorm']:g}")
    if recipe.layer_decay is not None:
        extra.append(
            f"layer-wise rate decay {recipe.layer_decay:g}, patch embedding × {recipe.patch_embed_multiplier:g}"
        )
    return f"{name} ({', '.join(extra)})" if extra else name


def recipe_table():
    """The recipes as a Markdown table (docs/methods.md holds it; a test keeps the two equal).

    Example:
        >>> print(keras_ssl.recipes.recipe_table().splitlines()[2][:73])
        | simclr | LARS (eta 1e-3, momentum 0.9) | 1 | linear | 1e-4 coupled | 10
    """
    rows = [
        "| method | optimiser | lr at batch 256 | batch rule | weight decay | warm-up epochs | cosine to | source |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, r in RECIPES.items():
        end = {0.0: "0", 1.0: "peak (constant)"}.get(r.final_fraction, f"{_number(r.final_fraction)} × peak")
        if r.milestones:
            end = "no cosine: " + ", ".join(f"× {r.gamma:g} at {f:g} of the run" for f in r.milestones)
        if r.cosine_stretch != 1.0:
            end += f" at {r.cosine_stretch:g} × the run"
        warmup = f"{r.warmup_epochs}" + (f" from {r.warmup_start_fraction:g} × peak" if r.warmup_start_fraction else "")
        decay = _number(r.weight_decay)
        if r.weight_decay_end is not None:
            decay = f"cosine {decay} → {_number(r.weight_decay_end)}"
        rows.append(
            f"| {name} | {_optimiser(r)} | {_number(r.learning_rate)} | {r.scaling} | "
            f"{decay} {r.decay} | {warmup} | {end} | {r.source} |"
        )
    return "\n".join(rows)
