"""ReSSL (Zheng et al. 2021, "ReSSL: Relational Self-Supervised Learning with Weak Augmentation")."""

import keras
from keras import ops

from keras_ssl.engine import SSLModel
from keras_ssl.layers.heads import ProjectionHead
from keras_ssl.layers.memory import MemoryBank
from keras_ssl.losses.relational import ressl
from keras_ssl.views.multi_crop import ReSSLMultiCrop
from keras_ssl.views.recipes import ressl_views


@keras.saving.register_keras_serializable(package="keras_ssl")
class ReSSL(SSLModel):
    """ReSSL: the student's similarities to a queue match the teacher's, sharpened.

    A momentum teacher (EMA of encoder and projector) embeds the weakly
    augmented view, the student the strongly augmented one; each compares
    its L2-normalised projection with a FIFO queue of past teacher
    projections, and the student's `softmax(sim / 0.1)` is trained towards
    the teacher's sharper `softmax(sim / 0.04)` (cross-entropy). The batch's
    teacher projections then enter the queue. As the official code, one
    direction only, and the batch's own keys are not in the softmax; its
    shuffle-BN is not simulated: no query meets its own key in the loss, so
    BatchNorm statistics leak no positive.

    Multi-crop (the official `ressl_multi.py`): given views with local crops
    (`ReSSLMultiCrop`), every strong crop, the full-size one and each local
    one, is a student distilled from the same weak-view teacher, and the
    loss is the mean over all of them. `ReSSL.default_views(size, num_local=4)`
    makes them (`keras-ssl pretrain --method ressl --local-crops 4`).

    Args:
        encoder: backbone mapping images in [0, 1] to `(B, D)` features.
        student_temperature: the student's temperature (> 0); paper: 0.1.
        teacher_temperature: the teacher's (> 0); paper: 0.04.
        queue_size: queue length (>= the batch size); paper: 4096 on CIFAR
            (16384 STL-10 / Tiny ImageNet, 131072 in the ImageNet code).
        projection_dim: projector output width; paper: 128 on CIFAR (512 ImageNet).
        hidden_dim: projector hidden width (Linear-ReLU-Linear, no
            BatchNorm); defaults to `D` (CIFAR: 512 = D of ResNet-18; ImageNet 4096).
        momentum: teacher EMA momentum; paper: 0.99 on CIFAR (0.996 STL-10 /
            Tiny ImageNet, 0.999 in the ImageNet code).
        momentum_end: momentum at the last step; defaults to `momentum`
            (constant, as the official code).
        views: the teacher's (weak) view first, then the student's: a
            `TwoViews` (defaults to `ressl_views`) or, for multi-crop, a
            `ReSSLMultiCrop` (the encoder must then take both sizes: build it
            with input `(None, None, C)` and pass `input_shape=`).
        **kwargs: `SSLModel` options (`image_size`, `value_range`, `seed`, `head_initializer`, ...).

    Example:
        >>> from keras_ssl.methods.ressl import ReSSL
        >>> from keras_ssl.views import ReSSLMultiCrop
        >>> encoder = keras_ssl.backbones.tiny_encoder((16, 16, 3), width=8)
        >>> model = ReSSL(encoder, queue_size=64, projection_dim=8, hidden_dim=16)
        >>> model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9))
        >>> history = model.fit(x_train, epochs=1, batch_size=16, verbose=0)
        >>> sorted(history.history), int(model.queue.filled)
        (['loss', 'z_std'], 64)
        >>> encoder = keras_ssl.backbones.tiny_encoder((None, None, 3), width=8)
        >>> views = ReSSLMultiCrop(16, local_size=8, num_local=2, seed=0)
        >>> model = ReSSL(encoder, input_shape=(16, 16, 3), views=views, queue_size=64, projection_dim=8)
        >>> model.view_shapes, model.local_views   # weak, strong, then 2 strong local crops
        ([(16, 16, 3), (16, 16, 3), (8, 8, 3), (8, 8, 3)], True)
    """

    default_head_initializer = "torch"  # PyTorch's `nn.Linear` default, the official code's
    view_recipe = staticmethod(ressl_views)
    encoder_batches = "view"  # ressl_multi.py: [self.encoder_q(im) for im in im_q], each crop alone
    momentum_pairs = (("encoder", "teacher_encoder"), ("projector", "teacher_projector"))
    # The loss is a mean over rows against a queue every replica shares: no gather needed.
    local_outputs = ("student", "teacher")
    monitored_output = "student"

    def __init__(
        self,
        encoder,
        *,
        student_temperature=0.1,
        teacher_temperature=0.04,
        queue_size=4096,
        projection_dim=128,
        hidden_dim=None,
        momentum=0.99,
        momentum_end=None,
        **kwargs,
    ):
        for name, value in (("student_temperature", student_temperature), ("teacher_temperature", teacher_temperature)):
            if not value > 0:
                raise ValueError(f"`{name}` must be > 0, got {value}.")
        if int(queue_size) < 2:
            raise ValueError(f"`queue_size` must be >= 2, got {queue_size}.")
        # Multi-crop is an option: an instance declares local views when it is given them (the
        # paper's default, and the CLI's without --local-crops, is the single strong view).
        self.local_views = bool(getattr(kwargs.get("views"), "num_local", 0))
        super().__init__(encoder, momentum=momentum, momentum_end=momentum_end, **kwargs)
        self.student_temperature, self.teacher_temperature = float(student_temperature), float(teacher_temperature)
        self.queue_size, self.projection_dim = int(queue_size), int(projection_dim)
        self.hidden_dim = int(hidden_dim or self.feature_dim)
        self.projector = ProjectionHead(
            self.hidden_dim, self.projection_dim, batch_norm=False, initializer=self.head_initializer
        )
        self.projector.build((None, self.feature_dim))
        self.queue = MemoryBank(self.queue_size, self.projection_dim, seed=self.next_seed())

    @classmethod
    def default_views(cls, image_size, *, num_local=None, **options):
        """The weak and strong views (`ressl_views`), then `num_local` strong local crops (`ReSSLMultiCrop`).

        Args:
            image_size: side of the weak and strong views.
            num_local: local crops of half the side (official multi-crop: 4);
                None or 0: none, the paper's CIFAR recipe.
            **options: the contract's `default_views` options (`channels`,
                `min_crop_scale`, `horizontal_flip`, `seed`).

        Example:
            >>> from keras_ssl.methods.ressl import ReSSL
            >>> ReSSL.default_views(16, num_local=2, seed=0).view_shapes((16, 16, 3))
            [(16, 16, 3), (16, 16, 3), (8, 8, 3), (8, 8, 3)]
        """
        if not num_local:
            return super().default_views(image_size, **options)
        options.pop("num_views", None)  # always the one weak and the one strong full-size view
        return ReSSLMultiCrop(image_size, num_local=num_local, **options)

    def ssl_forward(self, views, training):
        # Every strong crop (one, or more with multi-crop) is a student of the one weak view.
        student = ops.concatenate(self.embed(views[1:], self.projector, training), axis=0)
        (teacher,) = self.embed(views[:1], self.teacher_projector, training, encoder=self.teacher_encoder)
        return {"student": student, "teacher": ops.stop_gradient(teacher)}

    def compute_ssl_loss(self, outputs):
        # As the official multi-crop code, the teacher's rows repeat once per student crop.
        teacher = ops.tile(outputs["teacher"], (len(self.view_shapes) - 1, 1))
        # The queue as the last step left it: this batch's teacher keys enter it afterwards.
        loss = ressl(outputs["student"], teacher, self.queue.read(), self.student_temperature, self.teacher_temperature)
        return loss, {}

    def update_state(self, outputs):
        self.queue.enqueue(outputs["teacher"])
