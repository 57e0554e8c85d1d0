"""SLIP: CLIP's loss plus SimCLR's NT-Xent on two more views, through one image encoder."""

import keras
import numpy as np
import pytest
from conftest import small_encoder, tiny_text_model
from keras import ops
from numpy_refs import clip as numpy_clip
from numpy_refs import nt_xent as numpy_nt_xent

from keras_ssl.layers import OneView, TwoViews
from keras_ssl.methods.slip import SLIP
from keras_ssl.text import Tokenizer, cifar10_captions
from keras_ssl.views import ChainedViews, slip_views

CAPTIONS = cifar10_captions(np.arange(16) % 10, seed=0)
TOKENIZER = Tokenizer(max_length=12).adapt(CAPTIONS)

MAKERS = {
    "slip": lambda: tiny_text_model(SLIP, ssl_hidden_dim=16, ssl_projection_dim=8),
}


def test_loss_is_clip_plus_scaled_nt_xent():
    model = SLIP(
        small_encoder(), tokenizer=TOKENIZER, embed_dim=16, text_width=16, text_depth=1, text_heads=2, ssl_scale=0.5
    )
    assert model.ssl_temperature == 0.1 and model.ssl_projection_dim == 256  # the paper's
    model.log_logit_scale.assign(np.log(20.0))
    rng = np.random.default_rng(0)
    numpy_out = {
        k: rng.normal(size=(8, 16 if k in ("z1", "text") else 256)).astype("float32") for k in model.gathered_outputs
    }
    assert sorted(numpy_out) == ["ssl_z1", "ssl_z2", "text", "z1"]
    out = {k: ops.convert_to_tensor(v) for k, v in numpy_out.items()}
    loss, terms = model.compute_ssl_loss(out)
    clip = numpy_clip(numpy_out["z1"], numpy_out["text"], 20.0)
    ssl = numpy_nt_xent(numpy_out["ssl_z1"], numpy_out["ssl_z2"], 0.1)
    np.testing.assert_allclose(float(ops.convert_to_numpy(terms["clip"])), clip, rtol=1e-5)
    np.testing.assert_allclose(float(ops.convert_to_numpy(terms["ssl"])), ssl, rtol=1e-5)
    np.testing.assert_allclose(float(ops.convert_to_numpy(loss)), clip + 0.5 * ssl, rtol=1e-5)


def test_views_are_clip_then_two_simclr_views_and_round_trip():
    views = slip_views(16, seed=0)
    first, second = views.makers
    assert isinstance(first, OneView) and isinstance(second, TwoViews) and views.num_global == 3
    assert tuple(first.augment.scale) == (0.5, 1.0)  # CLIP's crop
    assert views.view_shapes((16, 16, 3)) == [(16, 16, 3)] * 3  # views are drawn in the harness's steps
    clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(views))
    assert [type(m) for m in clone.makers] == [OneView, TwoViews]
    with pytest.raises(TypeError, match="view makers"):
        ChainedViews([keras.layers.Identity()])


def test_bad_options_are_rejected():
    with pytest.raises(ValueError, match="ssl_temperature"):
        SLIP(small_encoder(), tokenizer=TOKENIZER, ssl_temperature=0.0)
    with pytest.raises(ValueError, match="3 full-size views"):
        SLIP(small_encoder(), tokenizer=TOKENIZER, views=OneView(keras.layers.Identity()))
