"""SLIP (Mu et al. 2022): CLIP plus SimCLR on the same image encoder."""

import keras

from keras_ssl import losses
from keras_ssl.methods.clip import CLIP
from keras_ssl.methods.simclr import SimCLR
from keras_ssl.views.recipes import slip_views


@keras.saving.register_keras_serializable(package="keras_ssl")
class SLIP(CLIP):
    """SLIP: CLIP's image-text loss plus SimCLR's NT-Xent on two more views of each image.

    The contracts compose: CLIP's view, forward, outputs and loss are
    CLIP's (a subclass), and two SimCLR views go through the same image
    encoder and a SimCLR projector of their own (3 layers, BatchNorm on the
    hidden ones; the official `image_mlp`) into NT-Xent
    (`keras_ssl.losses.nt_xent`, SimCLR's loss). The loss is
    `clip + ssl_scale * ssl` (official `SLIPLoss`), both terms logged.
    Data, tokenizer, zero-shot and retrieval are CLIP's.

    Args:
        encoder, text_encoder: as `CLIP`.
        ssl_scale: weight of the SimCLR term (paper: 1.0).
        ssl_temperature: NT-Xent temperature (paper: 0.1).
        ssl_projection_dim: SimCLR projector output (paper: 256).
        ssl_hidden_dim: its width; defaults to the encoder's feature size
            (paper: 4096 for a ViT-B; SimCLR's rule here).
        views: a view maker of 3 full-size views (CLIP's, then SimCLR's
            two); defaults to `slip_views`.
        **kwargs: `CLIP` options (`tokenizer`, `embed_dim`, text sizes,
            `temperature`) and `SSLModel` options.

    Example:
        >>> from keras_ssl.methods.slip import SLIP
        >>> captions = [f"a photo of a {['cat', 'dog'][label % 2]}." for label in y_train]
        >>> tok = keras_ssl.text.Tokenizer(max_length=8).adapt(captions)
        >>> model = SLIP(encoder, tokenizer=tok, embed_dim=16, text_width=16, text_depth=1, text_heads=2, ssl_projection_dim=8)
        >>> model.compile(optimizer=keras.optimizers.Adam(1e-3))
        >>> history = model.fit(x_train, captions, batch_size=16, epochs=1, verbose=0)
        >>> sorted(history.history)
        ['clip', 'logit_scale', 'loss', 'ssl', 'z_std']
    """

    global_views = 3
    view_recipe = staticmethod(slip_views)
    # SimCLR's outputs, renamed beside CLIP's
    gathered_outputs = CLIP.gathered_outputs + tuple(f"ssl_{k}" for k in SimCLR.gathered_outputs)
    loss_terms = CLIP.loss_terms + ("clip", "ssl")

    def __init__(
        self,
        encoder,
        text_encoder=None,
        *,
        ssl_scale=1.0,
        ssl_temperature=0.1,
        ssl_projection_dim=256,
        ssl_hidden_dim=None,
        **kwargs,
    ):
        if not ssl_temperature > 0 or not ssl_scale >= 0:
            raise ValueError(f"need ssl_temperature > 0 and ssl_scale >= 0, got {ssl_temperature}, {ssl_scale}.")
        super().__init__(encoder, text_encoder, **kwargs)
        self.ssl_scale, self.ssl_temperature = float(ssl_scale), float(ssl_temperature)
        self.ssl_projection_dim = int(ssl_projection_dim)
        self.ssl_hidden_dim = int(ssl_hidden_dim or self.feature_dim)
        # SimCLR v2's projector, as the official `image_mlp`, but with no BatchNorm on the output.
        self.ssl_projector = SimCLR.make_projector(
            self.ssl_hidden_dim, self.ssl_projection_dim, output_batch_norm=False, name="ssl_projector"
        )
        self.ssl_projector.build((None, self.feature_dim))

    def ssl_forward(self, views, tokens, training):
        outputs = super().ssl_forward(views[:1], tokens, training)
        z1, z2 = self.embed(views[1:], self.ssl_projector, training)
        return {**outputs, "ssl_z1": z1, "ssl_z2": z2}

    def compute_ssl_loss(self, outputs):
        clip, terms = super().compute_ssl_loss(outputs)
        ssl = losses.nt_xent(outputs["ssl_z1"], outputs["ssl_z2"], self.ssl_temperature)
        return clip + self.ssl_scale * ssl, {**terms, "clip": clip, "ssl": ssl}
