"""Encoders users bring: a subclassed model, a Lambda model, keras.applications.

A module of its own, so a subprocess on another backend can import the
registered subclassed encoder to load it.
"""

import keras


@keras.saving.register_keras_serializable(package="tests")
class SubclassedEncoder(keras.Model):
    """Conv-BN-ReLU twice and average pooling, written as a subclassed model."""

    def __init__(self, width=8, **kwargs):
        super().__init__(**kwargs)
        self.width = width
        self.conv1 = keras.layers.Conv2D(width, 3, strides=2, padding="same")
        self.bn1 = keras.layers.BatchNormalization()
        self.conv2 = keras.layers.Conv2D(2 * width, 3, strides=2, padding="same")
        self.bn2 = keras.layers.BatchNormalization()
        self.pool = keras.layers.GlobalAveragePooling2D()

    def call(self, x, training=False):
        x = keras.ops.relu(self.bn1(self.conv1(x), training=training))
        x = keras.ops.relu(self.bn2(self.conv2(x), training=training))
        return self.pool(x)

    def get_config(self):
        return {**super().get_config(), "width": self.width}


def lambda_encoder(input_shape=(32, 32, 3)):
    """A functional encoder holding a `Lambda` layer."""
    inputs = keras.Input(input_shape)
    x = keras.layers.Lambda(lambda t: 2.0 * t - 1.0, name="to_pm1")(inputs)
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same")(x)
    x = keras.layers.BatchNormalization()(x)
    return keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(keras.layers.ReLU()(x)))


def make(kind, input_shape=(32, 32, 3)):
    """The encoder of `kind`: subclassed, lambda, or a keras.applications name."""
    from keras_ssl import backbones

    if kind == "subclassed":
        encoder = SubclassedEncoder(8)
        encoder(keras.ops.zeros((1, 32, 32, input_shape[-1])))
        return encoder
    if kind == "lambda":
        return lambda_encoder(input_shape)
    return backbones.application(kind, input_shape=input_shape)
