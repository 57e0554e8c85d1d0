"""Encoders: ResNets (CIFAR and ImageNet stems), a tiny conv net, ViTs."""

from keras_ssl.backbones.resnet import resnet, resnet18, resnet34, resnet50, tiny_encoder
from keras_ssl.backbones.vit import ViT, vit, vit_base, vit_small, vit_tiny
