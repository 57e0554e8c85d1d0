"""The encoder each paper evaluates (DINO's teacher, I-JEPA's and MSN's target): declared by the
method, scored and saved by the CLI as encoder.keras, read by the monitors and by `export`."""

import json
import os

import keras
import numpy as np
import pytest

from keras_ssl import backbones, cli, monitors
from keras_ssl.methods import METHODS


def test_each_method_declares_the_encoder_its_official_evaluation_loads():
    # DINO's and iBOT's eval_knn.py / eval_linear.py (--checkpoint_key teacher), DINOv2's
    # build_model_for_eval (the teacher), I-JEPA's paper (the target encoder) and MSN's
    # logistic_eval.py (checkpoint['target_encoder']); every other method evaluates its online encoder.
    official = {"dino": "teacher_encoder", "ibot": "teacher_encoder", "dinov2": "teacher_encoder"}
    official |= {"ijepa": "target_encoder", "msn": "target_encoder"}
    assert {name: m.evaluated_encoder for name, m in METHODS.items()} == {
        name: official.get(name, "encoder") for name in METHODS
    }


def test_the_monitors_read_the_evaluated_encoder():
    model = METHODS["dino"](backbones.tiny_encoder((None, None, 3), width=8), input_shape=(16, 16, 3), output_dim=16)
    knn = monitors.KNNMonitor(np.zeros((4, 16, 16, 3), "uint8"), np.zeros(4, "int64"), every=1)
    knn.set_model(model)
    assert knn._encoder() is model.teacher_encoder
    simclr = METHODS["simclr"](backbones.tiny_encoder((16, 16, 3), width=8))
    knn.set_model(simclr)
    assert knn._encoder() is simclr.encoder


@pytest.mark.skipif(keras.backend.backend() != "torch", reason="a CLI run on one backend (PyTorch)")
def test_pretrain_saves_dinos_teacher_as_encoder_keras_and_the_student_beside_it(tmp_path, capsys):
    out = str(tmp_path / "dino")
    argv = ["pretrain", "--method", "dino", "--data", "digits", "--limit", "64", "--batch-size", "32"]
    argv += ["--image-size", "16", "--epochs", "1", "--width", "0.25", "--knn-every", "0", "--no-plots"]
    assert cli.main([*argv, "--verbose", "0", "--output", out]) == 0
    # Both scores: the teacher lags the student in short runs.
    assert "that is its teacher_encoder, as the paper evaluates; online encoder" in capsys.readouterr().out
    with open(os.path.join(out, "history.json")) as f:
        record = json.load(f)
    assert 0 <= record["knn_after"] <= 1 and 0 <= record["knn_after_online"] <= 1
    model = keras.saving.load_model(os.path.join(out, "model.keras"))
    teacher = keras.saving.load_model(os.path.join(out, "encoder.keras"))
    student = keras.saving.load_model(os.path.join(out, "online_encoder.keras"))
    for saved, live in ((teacher, model.teacher_encoder), (student, model.encoder)):
        for a, b in zip(saved.get_weights(), live.get_weights()):
            np.testing.assert_array_equal(a, b)
    # Two steps at momentum 0.996 leave the teacher near its start, the student away from it.
    assert not all(np.array_equal(a, b) for a, b in zip(teacher.get_weights(), student.get_weights()))
    exported = str(tmp_path / "exported.keras")
    assert cli.main(["export", out, "--output", exported]) == 0
    for a, b in zip(keras.saving.load_model(exported).get_weights(), teacher.get_weights()):
        np.testing.assert_array_equal(a, b)
