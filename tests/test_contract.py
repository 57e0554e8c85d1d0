"""The method contract: a method declares what differs, the engine does the rest."""

import ast
import inspect
import os

import keras
import numpy as np
import pytest
from conftest import CrashAt, random_images, small_encoder
from keras import ops

import keras_ssl
from keras_ssl import losses
from keras_ssl.layers import MemoryBank, MultiCrop, OneView, TwoViews, simclr_augmenter, simclr_views
from keras_ssl.methods.base import SSLModel


@keras.saving.register_keras_serializable(package="keras_ssl_tests")
class ToyMomentumQueue(SSLModel):
    """A mean teacher whose queue of past teacher keys serves as negatives."""

    view_recipe = staticmethod(simclr_views)
    momentum_pairs = (("encoder", "teacher"), ("head", "teacher_head"))
    gathered_outputs = ("p", "t")
    monitored_output = "p"
    loss_terms = ("agreement",)

    def __init__(self, encoder, *, dim=8, queue_size=16, momentum=0.9, momentum_end=1.0, **kwargs):
        super().__init__(encoder, momentum=momentum, momentum_end=momentum_end, **kwargs)
        self.dim, self.queue_size = dim, queue_size
        self.head = keras.layers.Dense(dim)
        self.head.build((None, self.feature_dim))
        self.queue = MemoryBank(queue_size, dim, seed=self.next_seed())

    def ssl_forward(self, views, training):
        (h,) = self.encode(views[:1], training)
        (g,) = self.encode(views[1:], training, encoder=self.teacher)
        return {"p": self.head(h), "t": ops.stop_gradient(self.teacher_head(g))}

    def compute_ssl_loss(self, outputs):
        loss = losses.info_nce(outputs["p"], outputs["t"], 0.2, negatives=self.queue.read())
        return loss, {"agreement": -losses.negative_cosine(outputs["p"], outputs["t"])}

    def update_state(self, outputs):
        self.queue.enqueue(outputs["t"])


def toy(seed=3):
    keras.utils.set_random_seed(11)
    model = ToyMomentumQueue(small_encoder(), seed=seed)
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    return model


def test_toy_method_gets_targets_queue_and_metrics_by_declaration():
    model = toy()
    for online, target in model.momentum_pairs:
        online, target = getattr(model, online), getattr(model, target)
        assert len(target.weights) == len(online.weights) > 0
        for o, t in zip(online.weights, target.weights):
            np.testing.assert_array_equal(np.array(o), np.array(t))
            assert not t.trainable
    history = model.fit(random_images(32), batch_size=8, epochs=2, verbose=0)
    assert set(history.history) == {"loss", "agreement", "z_std"}
    assert np.all(np.isfinite(history.history["loss"]))
    assert int(model.queue.filled) == 16 and int(model.step) == 8
    # The teachers moved (EMA of a moving student) but are not the student.
    moved = [np.abs(np.array(t) - np.array(o)).max() for o, t in zip(model.head.weights, model.teacher_head.weights)]
    assert max(moved) > 1e-6


def test_toy_method_resumes_exactly_and_round_trips_a_whole_model(tmp_path):
    x = random_images(32)
    fit = dict(batch_size=8, epochs=3, shuffle=False, verbose=0)
    reference = toy()
    reference.fit(x, **fit)
    backup = lambda: keras.callbacks.BackupAndRestore(str(tmp_path / "backup"))
    with pytest.raises(RuntimeError, match="simulated"):
        toy().fit(x, callbacks=[backup(), CrashAt(epoch=1, batch=2)], **fit)
    resumed = toy()
    assert len(resumed.fit(x, callbacks=[backup()], **fit).epoch) == 2
    assert len(reference.variables) == len(resumed.variables)
    for a, b in zip(reference.variables, resumed.variables):  # teachers, queue, pointer, step
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(b), keras.ops.convert_to_numpy(a), atol=1e-5, err_msg=a.path
        )

    path = str(tmp_path / "toy.keras")
    reference.save(path)
    loaded = keras.saving.load_model(path)
    assert type(loaded) is ToyMomentumQueue
    for key in ("dim", "queue_size", "momentum", "momentum_end", "seed", "image_size", "input_shape"):
        assert loaded.get_config()[key] == reference.get_config()[key], key
    for a, b in zip(reference.variables, loaded.variables):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))


def test_config_is_derived_from_the_constructor():
    model = ToyMomentumQueue(small_encoder(), dim=6, queue_size=12, momentum=0.5, seed=4)
    config = model.get_config()
    assert {"dim", "queue_size", "momentum", "momentum_end", "views", "seed", "encoder"} <= set(config)
    clone = ToyMomentumQueue.from_config(config)
    assert (clone.dim, clone.queue_size, clone.momentum, clone.seed) == (6, 12, 0.5, 4)
    assert isinstance(clone.views, TwoViews)


@pytest.mark.parametrize("name", sorted(keras_ssl.METHODS))
def test_every_method_round_trips_its_config(name):
    method = keras_ssl.METHODS[name]
    if method.default_backbone.startswith("vit"):
        encoder, options = keras_ssl.backbones.vit(image_size=16, patch_size=4, dim=16, depth=1, heads=2), {}
    elif method.local_views:
        encoder, options = small_encoder((None, None, 3)), {"input_shape": (16, 16, 3)}
    else:
        encoder, options = small_encoder(), {}
    if "num_samples" in method.hyperparameters():  # a per-image memory needs the dataset's size
        options["num_samples"] = 64
    model = method(encoder, seed=5, **options)
    config = model.get_config()
    assert set(method.hyperparameters()) <= set(config)
    clone = method.from_config(config)
    assert clone.get_config() == config
    assert [tuple(s) for s in clone.view_shapes] == [tuple(s) for s in model.view_shapes]


def test_views_are_checked_at_construction():
    encoder = small_encoder()
    with pytest.raises(TypeError, match=r"TwoViews\(layer\)"):
        keras_ssl.SimCLR(encoder, views=simclr_augmenter(16))
    with pytest.raises(ValueError, match="needs 2 full-size views; the given MultiCrop makes 2 full-size and 2 local"):
        keras_ssl.SimCLR(encoder, views=MultiCrop(16, 8, num_local=2))
    with pytest.raises(ValueError, match="needs 1 full-size view; the given TwoViews makes 2"):
        keras_ssl.MAE(keras_ssl.backbones.vit_tiny(image_size=16, patch_size=4), views=TwoViews(simclr_augmenter(16)))
    with pytest.raises(ValueError, match=r"views have \[3\] channels but the images have 1"):
        keras_ssl.SimCLR(small_encoder((16, 16, 1)), views=TwoViews(keras.layers.Conv2D(3, 1)))


def test_views_an_encoder_refuses_are_named_at_construction():
    # A fixed 16x16 encoder cannot take SwAV's 8x8 local crops: say so now,
    # not with Keras's raw shape error inside fit.
    with pytest.raises(ValueError, match=r"16x16 inputs only.*8x8.*\(None, None, 3\)"):
        keras_ssl.SwAV(small_encoder((16, 16, 3)))
    model = keras_ssl.SwAV(
        small_encoder((None, None, 3)),
        input_shape=(16, 16, 3),
        views=keras_ssl.layers.multi_crop_views(16, num_local=3, seed=0),
    )
    assert [tuple(s) for s in model.view_shapes] == [(16, 16, 3)] * 2 + [(8, 8, 3)] * 3


def test_a_method_without_targets_refuses_momentum():
    with pytest.raises(TypeError, match="no momentum target"):
        keras_ssl.SimCLR(small_encoder(), momentum=0.99)


def test_views_in_a_step_are_the_declared_ones(monkeypatch):
    # One view per image for OneView, and views drawn per image, not shared.
    model = keras_ssl.SimCLR(small_encoder(), seed=0)
    seen = []
    original = keras_ssl.SimCLR.ssl_forward

    def recording(self, views, training):
        seen.append([tuple(v.shape) for v in views])
        return original(self, views, training=training)

    monkeypatch.setattr(keras_ssl.SimCLR, "ssl_forward", recording)
    model(ops.convert_to_tensor(random_images(4)), training=True)
    assert seen[-1] == [(4, 16, 16, 3), (4, 16, 16, 3)]
    v1, v2 = model.views(ops.convert_to_tensor(random_images(4).astype("float32") / 255.0), training=True)
    assert np.abs(ops.convert_to_numpy(v1) - ops.convert_to_numpy(v2)).max() > 1e-3
    with pytest.raises(TypeError):
        OneView(3)


def _code_strings_and_names(path):
    """String constants (docstrings excluded) and attribute names of a module."""
    tree = ast.parse(open(path).read())
    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef)) and ast.get_docstring(node):
            docstrings.add(id(node.body[0].value))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            found.add(node.value)
        elif isinstance(node, ast.Attribute):
            found.add(node.attr)
    return found


def test_the_engine_names_no_method_and_no_method_output():
    engine = os.path.dirname(keras_ssl.engine.__file__)
    in_base = set().union(
        *(_code_strings_and_names(os.path.join(engine, f)) for f in os.listdir(engine) if f.endswith(".py"))
    )
    classes = [keras_ssl.CLIP, *keras_ssl.METHODS.values()]
    names = {cls.__name__ for cls in classes} | {"MoCo"}
    keys = set()
    for cls in classes:
        keys |= set(cls.gathered_outputs) | {cls.monitored_output} | set(cls.loss_terms)
        keys |= {attr for pair in cls.momentum_pairs for attr in pair if attr != "encoder"}
    keys.discard(None)
    assert not names & in_base, names & in_base
    assert not keys & in_base, keys & in_base
    assert os.path.dirname(inspect.getfile(SSLModel)) == engine


def test_a_method_cannot_silently_replace_an_engine_internal():
    # iBOT once named a helper `_forward`, the engine's build forward: refused when defined.
    with pytest.raises(TypeError, match=r"redefines the engine's internal \['_forward'\]"):

        class Clash(keras_ssl.SimCLR):
            def _forward(self, views, training):
                return {}

    class Fine(keras_ssl.SimCLR):  # public hooks stay overridable
        def check_fit_data(self, x, y, batch_size):
            return super().check_fit_data(x, y, batch_size)


def test_encoder_batches_is_checked_when_the_class_is_made():
    with pytest.raises(ValueError, match=r"Typo.encoder_batches must be 'group' or 'view', got 'views'"):

        class Typo(keras_ssl.SimCLR):
            encoder_batches = "views"


class ToyTokens(SSLModel):
    """A token method whose constructor reads the ViT's token interface at once."""

    view_recipe = staticmethod(simclr_views)
    token_encoder = True

    def __init__(self, encoder, **kwargs):
        super().__init__(encoder, **kwargs)
        self.grid = encoder.grid_size  # an AttributeError here if the engine let a conv net in


def test_a_token_method_gets_a_token_encoder_checked_once_before_its_constructor():
    pattern = (
        r"{} works on patch tokens: .*keras_ssl\.backbones\.ViT .*backbones\.HubViT "
        r"\(backbones\.from_keras_hub\(backbone_or_preset, tokens=True\)\); got Sequential, which lacks \['embed_"
    )
    for make in (lambda cls: cls(small_encoder()), lambda cls: cls(encoder=small_encoder())):
        with pytest.raises(TypeError, match=pattern.format("ToyTokens")):
            make(ToyTokens)

    class Inherited(ToyTokens):  # no constructor of its own: the declaration is inherited and checked
        pass

    with pytest.raises(TypeError, match=pattern.format("Inherited")):
        Inherited(small_encoder())
    assert ToyTokens(keras_ssl.backbones.vit(image_size=16, patch_size=4, dim=16, depth=1, heads=2)).grid == 4
    tokens = sorted(name for name, method in keras_ssl.METHODS.items() if method.token_encoder)
    assert tokens == ["dinov2", "ibot", "ijepa", "mae", "msn", "simmim"]
