"""The parity benchmark's PyTorch references (benchmarks/torch_methods.py, torch_methods_catalogue.py) against NumPy.

Its losses on fixed inputs equal a NumPy computation of each paper's formula,
its ResNet-18 given keras_ssl's weights computes what keras_ssl's computes,
and parity.py's weighted kNN equals a hand count. Backend-neutral (PyTorch
and NumPy): run once, in the torch backend's run of the suite.
"""

import os
import sys

import keras
import numpy as np
import pytest

if keras.backend.backend() != "torch":
    pytest.skip("the PyTorch reference is checked once, in the torch backend's run", allow_module_level=True)
torch = pytest.importorskip("torch")

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks"))
import parity
import torch_methods

RNG = np.random.default_rng(0)


def _unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _bare(method, *names):
    """`method` with the named networks replaced by the identity, so its loss reads the views directly."""
    for name in names:
        setattr(method, name, torch.nn.Identity())
    return method


def _t(*arrays):
    return [torch.tensor(a, dtype=torch.float64) for a in arrays]


def test_simclr_loss_is_nt_xent():
    z1, z2 = RNG.normal(size=(2, 6, 5))
    method = _bare(torch_methods.SimCLR(0.125, temperature=0.3), "encoder", "projector").double()
    z = _unit(np.concatenate([z1, z2]))
    sim = z @ z.T / 0.3
    n = len(z)
    expected = np.mean(
        [-sim[i, (i + n // 2) % n] + np.log(sum(np.exp(sim[i, j]) for j in range(n) if j != i)) for i in range(n)]
    )
    assert float(method.loss(_t(z1, z2), 0).detach()) == pytest.approx(expected, rel=1e-9)


def test_byol_loss_is_both_ways_2_minus_2_cos():
    v1, v2 = RNG.normal(size=(2, 6, 4))
    a = RNG.normal(size=(4, 4))
    method = torch_methods.BYOL(0.125, projection_dim=4, hidden_dim=8)
    method.make_targets()
    _bare(method, "encoder", "projector", "target_encoder", "target_projector").double()
    method.predictor = torch.nn.Linear(4, 4, bias=False).double()
    method.predictor.weight.data = torch.tensor(a)
    cos = lambda p, z: np.sum(_unit(p) * _unit(z), -1)
    expected = np.mean(2 - 2 * cos(v1 @ a.T, v2)) + np.mean(2 - 2 * cos(v2 @ a.T, v1))
    assert float(method.loss(_t(v1, v2), 0).detach()) == pytest.approx(expected, rel=1e-9)


def test_dino_loss_and_centre():
    k, st, tt, cm = 7, 0.1, 0.04, 0.9
    views = RNG.normal(size=(4, 3, k))  # 2 global crops, then 2 local ones
    method = torch_methods.DINO(0.125, output_dim=k, hidden_dim=8, bottleneck_dim=4, center_momentum=cm)
    method.make_targets()
    _bare(method, "encoder", "head", "teacher_encoder", "teacher_head").double()
    method.center = torch.zeros(1, k, dtype=torch.float64) + 0.5  # a centre from earlier steps
    softmax = lambda x: (
        np.exp(x - x.max(-1, keepdims=True)) / np.exp(x - x.max(-1, keepdims=True)).sum(-1, keepdims=True)
    )
    terms = [
        np.mean(np.sum(-softmax((views[i] - 0.5) / tt) * np.log(softmax(views[v] / st)), -1))
        for i in range(2)
        for v in range(4)
        if v != i
    ]
    assert float(method.loss(_t(*views), 0).detach()) == pytest.approx(np.mean(terms), rel=1e-9)
    expected_centre = cm * 0.5 + (1 - cm) * np.concatenate(views[:2]).mean(0)
    np.testing.assert_allclose(method.center.numpy()[0], expected_centre, rtol=1e-12)


def test_barlow_twins_and_vicreg_losses():
    z1, z2 = RNG.normal(size=(2, 8, 3))
    std = lambda z: (z - z.mean(0)) / np.sqrt(z.var(0) + 1e-5)
    c = std(z1).T @ std(z2) / 8
    expected = np.sum((np.diag(c) - 1) ** 2) + 5e-3 * (np.sum(c**2) - np.sum(np.diag(c) ** 2))
    barlow = _bare(torch_methods.BarlowTwins(0.125, projection_dim=3), "encoder", "projector").double()
    assert float(barlow.loss(_t(z1, z2), 0).detach()) == pytest.approx(expected, rel=1e-9)

    def var_cov(z):
        centred = z - z.mean(0)
        cov = centred.T @ centred / 7
        return np.mean(np.maximum(0, 1 - np.sqrt(z.var(0, ddof=1) + 1e-4))), (
            np.sum(cov**2) - np.sum(np.diag(cov) ** 2)
        ) / 3

    (v1, c1), (v2, c2) = var_cov(z1), var_cov(z2)
    expected = 25 * np.mean((z1 - z2) ** 2) + 25 * (v1 + v2) / 2 + (c1 + c2)
    vicreg = _bare(torch_methods.VICReg(0.125, projection_dim=3), "encoder", "projector").double()
    assert float(vicreg.loss(_t(z1, z2), 0).detach()) == pytest.approx(expected, rel=1e-9)


def test_resnet_given_keras_ssl_weights_computes_what_keras_ssl_computes():
    import keras_ssl

    method = torch_methods.SimCLR(0.125)
    torch_methods.initialise(method, "torch")
    reference = method.encoder
    for m in reference.modules():  # non-trivial BatchNorm parameters, so a swapped gamma/beta shows
        if isinstance(m, torch.nn.BatchNorm2d):
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.5, 0.5)
    weights = {k: v for k, v in method.keras_weights().items() if k.startswith("enc/")}
    encoder = keras_ssl.backbones.resnet18((32, 32, 3), width=0.125)
    for layer in encoder.layers:
        for w in layer.weights:
            key = f"enc/{layer.name}/{w.name}"
            if key in weights:
                w.assign(weights.pop(key))
    assert not weights, sorted(weights)
    images = RNG.uniform(size=(2, 32, 32, 3)).astype("float32")
    reference.eval()
    expected = reference(torch.tensor(images).permute(0, 3, 1, 2)).detach().numpy()
    np.testing.assert_allclose(keras.ops.convert_to_numpy(encoder(images, training=False)), expected, atol=1e-4)


def test_weighted_knn_counts_votes_by_similarity():
    train = np.array([[1.0, 0.0], [0.0, 1.0], [0.2, 1.0]])
    labels = np.array([0, 1, 1])
    # Query (1, 0.05): cosines .999 (class 0), .050 and .245 (class 1). Weighted by exp(cos / 0.1),
    # the one close neighbour outvotes the two far ones (e^9.99 > e^0.5 + e^2.45); counted, it would not.
    query = np.array([[1.0, 0.05]])
    assert parity.knn_top1(train, labels, query, np.array([0]), k=3, t=0.1) == 1.0
    # At a high temperature the weights flatten and the two class-1 neighbours win.
    assert parity.knn_top1(train, labels, query, np.array([0]), k=3, t=100.0) == 0.0


def test_hue_shift_is_colorsys():
    import colorsys

    x = RNG.uniform(size=(3, 3, 2, 2))
    x[0, :, 0, 0] = 0.5  # a grey pixel: no hue to rotate
    shift = np.array([0.05, -0.1, 0.45])
    out = torch_methods._hue(torch.tensor(x), torch.tensor(shift)).numpy()
    for i in range(3):
        for a in range(2):
            for b in range(2):
                h, s, v = colorsys.rgb_to_hsv(*x[i, :, a, b])
                np.testing.assert_allclose(out[i, :, a, b], colorsys.hsv_to_rgb((h + shift[i]) % 1, s, v), atol=1e-12)


def test_moco_v2_loss_reads_the_queue_then_enqueues_the_keys():
    v1, v2 = RNG.normal(size=(2, 8, 3))
    queue = _unit(RNG.normal(size=(5, 3)))
    method = torch_methods.MoCoV2(0.125, temperature=0.2, queue_size=5, projection_dim=3, num_splits=2)
    method.make_targets()
    _bare(method, "encoder", "projector", "key_encoder", "key_projector").double()
    method.queue = torch.tensor(queue)
    q, k = _unit(v1), _unit(v2)
    logits = np.concatenate([np.sum(q * k, 1, keepdims=True), q @ queue.T], 1) / 0.2
    expected = np.mean(np.log(np.exp(logits).sum(1)) - logits[:, 0])
    views = _t(v1, v2)
    views[0].requires_grad_()
    loss = method.loss(views, 0)
    loss.backward()  # the queue it read is intact for the backward pass
    assert float(loss.detach()) == pytest.approx(expected, rel=1e-9)
    # 8 keys through a queue of 5: the last 5 keys, written cyclically from row 0.
    np.testing.assert_allclose(method.queue.numpy(), np.concatenate([k[5:], k[3:5]]), rtol=1e-12)


def test_paper_recipe_sides_follow_one_schedule():
    """`--recipe paper`: the reference's official DINO optimizer equals keras_ssl's at every step of the issue's run."""
    import keras_ssl

    args = parity.parse(["--recipe", "paper", "--epochs", "20", "--batch-size", "256"])
    steps_per_epoch = 10000 // 256
    lr_at, decay, clip = parity.official_recipe(args, "dino", steps_per_epoch)
    # DINO's cosine_scheduler by hand: 78 warm-up steps (a tenth of 780) along linspace(0, 0.03), then 702 of cosine.
    assert len(lr_at) == 780 and lr_at[0] == 0.0 and lr_at[77] == pytest.approx(0.03)
    last = 1e-6 + (0.03 - 1e-6) * 0.5 * (1 + np.cos(np.pi * 701 / 702))
    assert lr_at[78] == pytest.approx(0.03) and lr_at[-1] == pytest.approx(last)
    optimizer = keras_ssl.recipes.paper_optimizer("dino", 256, steps_per_epoch, 20)
    ours = []
    for step in range(780):
        optimizer.iterations.assign(step)
        ours.append(float(keras.ops.convert_to_numpy(optimizer.learning_rate)))
    np.testing.assert_allclose(ours, lr_at, rtol=1e-5, atol=1e-9)
    assert optimizer.coupled_weight_decay == decay and optimizer.momentum == 0.9
    assert optimizer.clipnorm == clip and optimizer.exclude_bias_and_norm
    with pytest.raises(SystemExit, match="no official recipe for 'byol'"):
        parity.official_recipe(args, "byol", steps_per_epoch)


# The rest of the catalogue (benchmarks/torch_methods_catalogue.py), each against its paper's formula.
import torch_methods_catalogue as catalogue


def _linear(a):
    layer = torch.nn.Linear(a.shape[1], a.shape[0], bias=False).double()
    layer.weight.data = torch.tensor(a)
    return layer


def _ce(logits):
    """Cross-entropy of each row against its own index (the positive on the diagonal), averaged."""
    return np.mean(np.log(np.exp(logits).sum(1)) - np.diag(logits))


def test_tico_loss_and_running_covariance():
    # TiCo eq. (4): 1 - mean z1.z2 + rho mean z1^T C z1, C_t = beta C_{t-1} + (1 - beta) z1^T z1 / N.
    v1, v2, w1 = RNG.normal(size=(3, 6, 4))
    method = catalogue.TiCo(0.125, projection_dim=4, hidden_dim=8, beta=0.8, rho=3.0)
    method.make_targets()
    _bare(method, "encoder", "projector", "target_encoder", "target_projector").double()
    method.C = method.C.double()
    covariance = np.zeros((4, 4))
    for a, b in ((v1, v2), (w1, v2)):  # two steps: the second reads the first's C
        z1, z2 = _unit(a), _unit(b)
        covariance = 0.8 * covariance + 0.2 * z1.T @ z1 / 6
        expected = 1 - np.mean(np.sum(z1 * z2, 1)) + 3.0 * np.mean(np.sum((z1 @ covariance) * z1, 1))
        assert float(method.loss(_t(a, b), 0).detach()) == pytest.approx(expected, rel=1e-9)
    np.testing.assert_allclose(method.C.numpy(), covariance, rtol=1e-12)


def test_vibcreg_loss_and_iternorm_whitens():
    z1, z2 = RNG.normal(size=(2, 8, 3)) * np.array([1.0, 0.3, 2.0])
    method = _bare(catalogue.VIbCReg(0.125, projection_dim=3), "encoder", "projector", "whitening").double()

    def fd(z):  # the squared off-diagonal correlations, averaged over all D^2 entries
        c = z - z.mean(0)
        c = c / np.linalg.norm(c, axis=0)
        corr = c.T @ c
        return (np.sum(corr**2) - np.sum(np.diag(corr) ** 2)) / 9

    hinge = lambda z: np.mean(np.maximum(0, 1 - np.sqrt(z.var(0, ddof=1) + 1e-4)))
    expected = 25 * np.mean((z1 - z2) ** 2) + 25 * (hinge(z1) + hinge(z2)) + 200 * (fd(z1) + fd(z2))
    assert float(method.loss(_t(z1, z2), 0).detach()) == pytest.approx(expected, rel=1e-9)
    # IterNorm's Newton iterations converge to ZCA whitening, (Sigma + eps I)^(-1/2) (x - mean), per group
    # (on a well-conditioned Sigma: the uncoupled iteration amplifies round-off on an ill-conditioned one).
    x = RNG.normal(size=(64, 4)) * np.array([1.0, 1.3, 0.8, 1.1])
    iternorm = catalogue.IterNorm(4, num_groups=1, T=12, eps=1e-5).double()
    out = iternorm(torch.tensor(x)).detach().numpy()
    centred = x - x.mean(0)
    values, vectors = np.linalg.eigh(centred.T @ centred / 64 + 1e-5 * np.eye(4))
    np.testing.assert_allclose(out, centred @ vectors @ np.diag(values**-0.5) @ vectors.T, atol=1e-6)


def test_fastsiam_predicts_the_mean_of_the_other_views():
    views = RNG.normal(size=(4, 6, 3))
    a = RNG.normal(size=(3, 3))
    method = _bare(catalogue.FastSiam(0.125, num_views=4, projection_dim=3), "encoder", "projector").double()
    method.predictor = _linear(a)
    cos = lambda p, z: np.sum(_unit(p) * _unit(z), -1)
    expected = -np.mean([np.mean(cos(views[k] @ a.T, (views.sum(0) - views[k]) / 3)) for k in range(4)])
    assert float(method.loss(_t(*views), 0).detach()) == pytest.approx(expected, rel=1e-9)


def test_wmse_whitens_each_view_by_cholesky_then_compares_directions():
    # W-MSE: z = L^-1 (v - mean) with Sigma = L L^T (unbiased), loss 2 - 2 cos between the views.
    v1, v2 = RNG.normal(size=(2, 8, 3)) @ RNG.normal(size=(3, 3))
    method = catalogue.WMSE(0.125, projection_dim=3, hidden_dim=4, w_size=8)
    _bare(method, "encoder", "projector").double()

    def whiten(v):
        c = v - v.mean(0)
        return np.linalg.solve(np.linalg.cholesky(c.T @ c / 7), c.T).T

    expected = np.mean(2 - 2 * np.sum(_unit(whiten(v1)) * _unit(whiten(v2)), 1))
    assert float(method.loss(_t(v1, v2), 0).detach()) == pytest.approx(expected, rel=1e-9)
    assert np.allclose(np.cov(whiten(v1).T), np.eye(3))  # the NumPy side whitens


def test_nnclr_contrasts_nearest_neighbours_with_the_other_views_predictions():
    v1, v2 = RNG.normal(size=(2, 6, 3))
    a = RNG.normal(size=(3, 3))
    queue = _unit(RNG.normal(size=(10, 3)))
    method = _bare(catalogue.NNCLR(0.125, temperature=0.5, queue_size=10, projection_dim=3), "encoder", "projector")
    method = method.double()
    method.predictor = _linear(a)
    method.queue = torch.tensor(queue)
    nearest = lambda z: queue[np.argmax(_unit(z) @ queue.T, 1)]
    logits = lambda n, p: n @ _unit(p).T / 0.5
    expected = (_ce(logits(nearest(v1), v2 @ a.T)) + _ce(logits(nearest(v2), v1 @ a.T))) / 2
    assert float(method.loss(_t(v1, v2), 0).detach()) == pytest.approx(expected, rel=1e-9)
    # The first view's projections, unit length, replace the oldest rows.
    np.testing.assert_allclose(method.queue.numpy(), np.concatenate([_unit(v1), queue[6:]]), rtol=1e-12)


def test_moco_v3_loss_is_symmetric_infonce_scaled_by_2t():
    v1, v2 = RNG.normal(size=(2, 6, 3))
    a = RNG.normal(size=(3, 3))
    method = catalogue.MoCoV3(0.125, temperature=0.2, projection_dim=3, hidden_dim=4)
    method.make_targets()
    _bare(method, "encoder", "projector", "key_encoder", "key_projector").double()
    method.predictor = _linear(a)
    ctr = lambda q, k: 2 * 0.2 * _ce(_unit(q) @ _unit(k).T / 0.2)
    expected = ctr(v1 @ a.T, v2) + ctr(v2 @ a.T, v1)
    assert float(method.loss(_t(v1, v2), 0).detach()) == pytest.approx(expected, rel=1e-9)


def _softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def test_ressl_loss_is_the_relation_cross_entropy_then_the_keys_enter_the_queue():
    # ReSSL eq. (3)-(5): p_t = softmax(k.Q / 0.04), p_s = softmax(q.Q / 0.1), loss = -mean sum p_t log p_s,
    # over the queue Q before this batch's keys; then the keys (unit rows) overwrite the oldest entries.
    weak, strong, local = RNG.normal(size=(3, 4, 3))
    queue = _unit(RNG.normal(size=(8, 3)))  # (K, D) rows; the reference holds (D, K) as the official code
    method = catalogue.ReSSL(0.125, queue_size=8, projection_dim=3, hidden_dim=4)
    method.make_targets()
    _bare(method, "encoder", "projector", "target_encoder", "target_projector").double()
    method.queue = torch.tensor(queue.T.copy())
    target = _softmax(_unit(weak) @ queue.T / 0.04)
    log_student = lambda s: np.log(_softmax(_unit(s) @ queue.T / 0.1))
    expected = -np.mean(np.sum(target * log_student(strong), 1))
    views = _t(weak, strong)
    views[1].requires_grad_()
    loss = method.loss(views, 0)
    loss.backward()  # the queue it read is intact for the backward pass
    assert float(loss.detach()) == pytest.approx(expected, rel=1e-9)
    np.testing.assert_allclose(method.queue.numpy().T, np.concatenate([_unit(weak), queue[4:]]), rtol=1e-12)
    assert method.ptr == 4
    # Multi-crop (ressl_multi.py): every strong crop a student of the one weak view, the mean over all rows;
    # the second batch reads the queue the first left and fills its last 4 rows.
    queue = method.queue.numpy().T.copy()
    target = _softmax(_unit(weak) @ queue.T / 0.04)
    log_student = lambda s: np.log(_softmax(_unit(s) @ queue.T / 0.1))
    expected = -np.mean([np.sum(target * log_student(s), 1) for s in (strong, local)])
    assert float(method.loss(_t(weak, strong, local), 0).detach()) == pytest.approx(expected, rel=1e-9)
    np.testing.assert_allclose(method.queue.numpy().T, np.concatenate([queue[:4], _unit(weak)]), rtol=1e-12)
    assert method.ptr == 0


def test_mmcr_loss_is_minus_the_nuclear_norm_of_the_centroids():
    # MMCR: C = (mean_k z_bk / |z_bk|)_b, loss = lmbda mean_b ||Z_b||_* - ||C||_*, Z_b the (K, D) unit views.
    views = RNG.normal(size=(3, 5, 4))  # K = 3 views of B = 5 images, D = 4
    nuc = lambda m: np.sum(np.linalg.svd(m, compute_uv=False))
    z = _unit(views)
    centroids = z.mean(0)
    for lmbda in (0.0, 0.3):
        method = catalogue.MMCR(0.125, num_views=3, projection_dim=4, hidden_dim=8, lmbda=lmbda)
        _bare(method, "encoder", "projector").double()
        expected = lmbda * np.mean([nuc(z[:, b]) for b in range(5)]) - nuc(centroids)
        assert float(method.loss(_t(*views), 0)) == pytest.approx(expected, rel=1e-9)
    # The momentum branch (MMCR_Momentum_Loss): the centroid is the mean of the online and the momentum
    # network's centroids of the same views; ||Z_b||_* stays the online views'.
    a = RNG.normal(size=(4, 4))
    method = catalogue.MMCR(0.125, num_views=3, projection_dim=4, hidden_dim=8, lmbda=0.3, momentum=0.99)
    method.make_targets()
    _bare(method, "encoder", "projector", "momentum_encoder").double()
    method.momentum_projector = _linear(a)
    both = (centroids + _unit(views @ a.T).mean(0)) / 2
    expected = 0.3 * np.mean([nuc(z[:, b]) for b in range(5)]) - nuc(both)
    assert float(method.loss(_t(*views), 0)) == pytest.approx(expected, rel=1e-9)


def _nearest(queue, z):
    """NN(z): the support row of highest cosine with each row of z (NNCLR's eq. 4)."""
    return queue[np.argmax(_unit(z) @ queue.T, 1)]


def test_nnbyol_predicts_the_nearest_neighbour_of_the_other_views_target():
    # NNBYOL: sum over both directions of mean(2 - 2 cos(p_k, NN(t_other))); view 1's unit targets enter the set.
    v1, v2 = RNG.normal(size=(2, 6, 3))
    a = RNG.normal(size=(3, 3))
    queue = _unit(RNG.normal(size=(10, 3)))
    method = catalogue.NNBYOL(0.125, queue_size=10, projection_dim=3, hidden_dim=4)
    method.make_targets()
    _bare(method, "encoder", "projector", "target_encoder", "target_projector").double()
    method.predictor = _linear(a)
    method.queue = torch.tensor(queue)
    cos = lambda p, z: np.sum(_unit(p) * _unit(z), -1)
    nn1, nn2 = _nearest(queue, v1), _nearest(queue, v2)
    assert not np.allclose(nn1, _unit(v1))  # the neighbours are not the targets themselves
    expected = np.mean(2 - 2 * cos(v1 @ a.T, nn2)) + np.mean(2 - 2 * cos(v2 @ a.T, nn1))
    assert float(method.loss(_t(v1, v2), 0).detach()) == pytest.approx(expected, rel=1e-9)
    np.testing.assert_allclose(method.queue.numpy(), np.concatenate([_unit(v1), queue[6:]]), rtol=1e-12)


def test_nnsiam_predicts_the_nearest_neighbour_of_the_other_views_projection():
    # NNSiam: (D(p1, NN(z2)) + D(p2, NN(z1))) / 2 with D minus the mean cosine; view 1's unit z enter the set.
    v1, v2 = RNG.normal(size=(2, 6, 3))
    a = RNG.normal(size=(3, 3))
    queue = _unit(RNG.normal(size=(10, 3)))
    method = _bare(catalogue.NNSiam(0.125, queue_size=10, projection_dim=3), "encoder", "projector").double()
    method.predictor = _linear(a)
    method.queue = torch.tensor(queue)
    cos = lambda p, z: np.sum(_unit(p) * _unit(z), -1)
    expected = -(np.mean(cos(v1 @ a.T, _nearest(queue, v2))) + np.mean(cos(v2 @ a.T, _nearest(queue, v1)))) / 2
    assert float(method.loss(_t(v1, v2), 0).detach()) == pytest.approx(expected, rel=1e-9)
    np.testing.assert_allclose(method.queue.numpy(), np.concatenate([_unit(v1), queue[6:]]), rtol=1e-12)


def _dcl_terms(z1, z2, t, w):
    """Yeh et al. 2022 eq. 6: L_i^(k) = -w_i <z_i^(1), z_i^(2)> / t + log sum_{l in {1,2}, j != i} exp(<z_i^(k), z_j^(l)> / t)."""
    z1, z2 = _unit(z1), _unit(z2)
    views, b = (z1, z2), len(z1)
    terms = np.zeros((2, b))
    for k in range(2):
        for i in range(b):
            negatives = [views[k][i] @ views[l][j] / t for l in range(2) for j in range(b) if j != i]
            terms[k, i] = -w[i] * (z1[i] @ z2[i]) / t + np.log(np.sum(np.exp(negatives)))
    return terms


@pytest.mark.parametrize("weighting", [None, "von_mises"])
def test_simclr_dcl_loss_is_the_decoupled_loss_over_both_directions(weighting):
    z1, z2 = RNG.normal(size=(2, 6, 5))
    t, sigma = 0.3, 0.5
    method = _bare(catalogue.SimCLRDCL(0.125, temperature=t, sigma=sigma, weighting=weighting), "encoder", "projector")
    method = method.double()
    if weighting is None:
        w = np.ones(6)
    else:  # DCLW: w_i = 2 - exp(s_i / sigma) / mean_j exp(s_j / sigma), s_i the positive pair's cosine
        s = np.sum(_unit(z1) * _unit(z2), 1)
        w = 2 - np.exp(s / sigma) / np.mean(np.exp(s / sigma))
        assert np.mean(w) == pytest.approx(1.0)
    # The mean over the 2B anchors (keras_ssl's and lightly's reduction, the SimCLR paper's 1/2N) ...
    expected = _dcl_terms(z1, z2, t, w).mean()
    assert float(method.loss(_t(z1, z2), 0).detach()) == pytest.approx(expected, rel=1e-9)
    method.directions = "sum"  # ... or, as the repository's main.py, the two directions' means summed
    assert float(method.loss(_t(z1, z2), 0).detach()) == pytest.approx(2 * expected, rel=1e-9)


def test_simclr_dclw_weights_keep_their_gradient_as_the_official_lambda():
    # dcl.py's DCLW lambda is not detached: the weights pass gradient to the embeddings (lightly and keras_ssl detach).
    z1, z2 = RNG.normal(size=(2, 6, 5))
    grads = {}
    for detach in (False, True):
        method = _bare(
            catalogue.SimCLRDCL(0.125, temperature=0.3, weighting="von_mises"), "encoder", "projector"
        ).double()
        method.detach_weights = detach
        views = _t(z1, z2)
        views[0].requires_grad_()
        method.loss(views, 0).backward()
        grads[detach] = views[0].grad.numpy()
    assert not np.allclose(grads[False], grads[True])


def test_supcon_loss_is_the_papers_l_sup_out():
    z1, z2 = RNG.normal(size=(2, 6, 5))
    labels = np.array([0, 1, 0, 2, 1, 0])
    method = _bare(catalogue.SupCon(0.125, temperature=0.3), "encoder", "projector").double()
    method.labels = torch.tensor(labels)
    z, y = _unit(np.concatenate([z1, z2])), np.concatenate([labels, labels])
    n, terms = len(z), []
    for i in range(n):  # Khosla et al. eq. 2: positives P(i) = the other views of i's class
        others = [a for a in range(n) if a != i]
        log_norm = np.log(sum(np.exp(z[i] @ z[a] / 0.3) for a in others))
        positives = [p for p in others if y[p] == y[i]]
        terms.append(-np.mean([z[i] @ z[p] / 0.3 - log_norm for p in positives]))
    assert float(method.loss(_t(z1, z2), 0).detach()) == pytest.approx(np.mean(terms), rel=1e-9)
    method.labels = None
    with pytest.raises(ValueError, match="needs the batch's labels"):
        method.loss(_t(z1, z2), 0)


def test_deepcluster_v2_clusters_its_memory_then_classifies_every_crop_into_its_samples_cluster():
    # Six samples, five in the memory (sample 4 was not seen: no cluster, so its crops are left out).
    index = np.array([3, 0, 5, 1, 2])
    memory = _unit(RNG.normal(size=(2, 5, 4)))
    method = _bare(
        catalogue.DeepClusterV2(0.125, num_samples=6, num_prototypes=(3, 2, 2), projection_dim=4, kmeans_iterations=2),
        "encoder",
    )
    method = _bare(method, "projector").double()
    method.memory_index, method.memory = torch.tensor(index), torch.tensor(memory)
    torch.manual_seed(5)
    method.begin_epoch(0)
    torch.manual_seed(5)  # the same starting rows for the NumPy k-means below (main_deepclusterv2.py: randperm)
    starts = [torch.randperm(5)[:k].numpy() for k in (3, 2, 2)]
    expected = np.full((3, 6), -100)
    for h, k in enumerate((3, 2, 2)):
        bank = memory[h % 2]  # head h clusters assignment crop h mod 2
        centroids = bank[starts[h]]
        for _ in range(2):  # assign, move each centroid with members to their mean, normalise
            assigned = np.argmax(bank @ centroids.T, 1)
            centroids = _unit(
                np.stack([bank[assigned == c].mean(0) if (assigned == c).any() else centroids[c] for c in range(k)])
            )
        expected[h, index] = np.argmax(bank @ centroids.T, 1)
        np.testing.assert_allclose(method.prototypes(h).numpy(), centroids, rtol=1e-12)
    np.testing.assert_array_equal(method.assignments.numpy(), expected)

    crops = RNG.normal(size=(3, 2, 4))  # three crops of samples 4 (no cluster) and 2
    method.indices = torch.tensor([4, 2])
    z = [_unit(c) for c in crops]
    heads = []
    for h in range(3):
        p = method.prototypes(h).numpy()
        logits = [zc[1] @ p.T / 0.1 for zc in z]  # sample 2's row of each crop
        heads.append(np.mean([np.log(np.exp(lg).sum()) - lg[expected[h, 2]] for lg in logits]))
    assert float(method.loss(_t(*crops), 0).detach()) == pytest.approx(np.mean(heads), rel=1e-9)
    # The step's two global crops, unit length, take the memory's first positions, with their samples.
    method.after_step(0)
    np.testing.assert_array_equal(method.memory_index.numpy(), [4, 2, 5, 1, 2])
    np.testing.assert_allclose(method.memory.numpy()[:, :2], np.stack(z[:2]), rtol=1e-12)


def _step_sides(name, tmp_path, monkeypatch, steps, extra=("--align",)):
    """parity_step0's reference, its perturbed twin and keras_ssl (PyTorch backend) over `steps` steps."""
    import parity_step0

    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, size=(128 * steps, 32, 32, 3), dtype=np.uint8)
    np.savez(tmp_path / "cifar10.npz", x_train=images, y_train=rng.integers(0, 3, size=128 * steps))  # SupCon's
    monkeypatch.setenv("KERAS_SSL_DATA_DIR", str(tmp_path))
    threads = torch.get_num_threads()
    # One thread: the suite runs two workers on two cores, and oversubscribed torch threads crawl.
    argv = ["--workdir", str(tmp_path), "--batch-size", "8", "--threads", "1", *extra]
    try:
        args = parity_step0.parse(argv + ["--steps", str(steps)])  # SGD 1e-4, parity_step0's default
        reference = parity_step0.run_torch(args, name)
        args.perturbed = True
        noisy = parity_step0.run_torch(args, name) if steps > 1 else None
        args.perturbed = False
        ours = parity_step0.run_keras(args, "torch", name)
    finally:
        torch.set_num_threads(threads)
    return reference, noisy, ours


@pytest.mark.parametrize("name", sorted(parity.KERAS_CLASSES))
def test_first_steps_equal_the_reference_on_the_same_weights_views_and_state(name, tmp_path, monkeypatch):
    """keras_ssl's first three training losses are its independent reference's (benchmarks/parity_step0.py).

    The two sides share weights, views and random state (queues, permutations), so any difference in
    the forward (which views a BatchNorm spans, a head's layout, the loss) shows at step 0, as
    SimCLR's projector batching did; steps 1 and 2 add the optimizer and what each step carries to
    the next (queues, support sets, centres, running covariances, targets), up to the float noise a
    perturbed reference measures. DCLW's reference takes keras_ssl's documented choice
    (parity_step0.KNOWN_CHOICES: no gradient through its weights), which steps 1 and 2 would show.
    """
    import parity_step0

    reference, noisy, ours = _step_sides(name, tmp_path, monkeypatch, steps=3)
    assert ours["init_check"] < 1e-5
    assert ours["loss"] == pytest.approx(reference["loss"], rel=1e-4, abs=1e-6)  # parity_step0's tolerance
    ok, worst, noise = parity_step0.verdict(reference["losses"], ours["losses"], noisy["losses"])
    assert ok, (worst, reference["losses"], ours["losses"], noise)


def test_first_steps_check_sees_a_state_update_that_step0_cannot(tmp_path, monkeypatch):
    # MoCo v2 without its queue update: the same step 0, then negatives the reference no longer has.
    import parity_step0

    import keras_ssl

    monkeypatch.setattr(keras_ssl.layers.memory.MemoryBank, "enqueue", lambda self, keys: None)
    reference, noisy, ours = _step_sides("moco2", tmp_path, monkeypatch, steps=2)
    assert ours["loss"] == pytest.approx(reference["loss"], rel=1e-4, abs=1e-6)
    assert not parity_step0.verdict(reference["losses"], ours["losses"], noisy["losses"])[0]


@pytest.mark.parametrize("name", ["msn", "ijepa", "ibot", "dinov2"])
def test_first_steps_check_sees_masks_that_are_not_the_references(name, tmp_path, monkeypatch):
    # keras_ssl's own patch drop (MSN) or block masks (I-JEPA, iBOT, DINOv2) instead of the reference's replayed draws.
    import parity_step0

    monkeypatch.setitem(parity_step0.SYNC, name, (parity_step0.SYNC[name][0], parity_step0.no_sync))
    reference, noisy, ours = _step_sides(name, tmp_path, monkeypatch, steps=3)
    assert ours["init_check"] < 1e-5
    assert not parity_step0.verdict(reference["losses"], ours["losses"], noisy["losses"])[0]


def test_msn_keras_side_keeps_the_references_patches(tmp_path, monkeypatch):
    # parity_step0's MSN replay: every image keeps the reference's one subset of the batch, in its order.
    from keras_ssl.layers import masking

    kept, call = [], masking.RandomMasking.call

    def recording(self, tokens):
        out = call(self, tokens)
        kept.append(np.argsort(keras.ops.convert_to_numpy(out[2]), axis=1)[:, : out[0].shape[1]])
        return out

    monkeypatch.setattr(masking.RandomMasking, "call", recording)
    _step_sides("msn", tmp_path, monkeypatch, steps=2)
    reference = np.load(tmp_path / "step0_msn.npz")["state/keep"]
    assert reference.shape == (2, 54)  # floor(64 x 0.85) of the 8 x 8 patches
    for ours, subset in zip(kept[-2:], reference):  # the steps' calls, after the build's own
        np.testing.assert_array_equal(ours, np.tile(subset, (len(ours), 1)))


@pytest.mark.parametrize("name", ["ibot", "dinov2"])
def test_ibot_and_dinov2_references_draw_the_official_block_masks(name):
    # loader.py (iBOT): each global crop masked with probability 0.5, at most ratio * N <= N / 2 patches;
    # collate.py (DINOv2): exactly half the 2 B crops, stratum i below int(N * linspace(0.1, 0.5, B + 1)[i + 1]).
    # Both within keras_ssl's static bound (BlockMasking.max_masked), which parity_step0's replay relies on.
    import torch_methods_catalogue

    from keras_ssl.layers.block_masks import BlockMasking, paper_masking

    torch.manual_seed(0)
    method = torch_methods_catalogue.METHODS[name](0.125, output_dim=16, hidden_dim=16, bottleneck_dim=8)
    masks = np.stack([method.draw_masks(16).numpy() for _ in range(40)])
    counts = masks.sum(-1)
    assert masks.shape == (40, 32, 64) and masks.dtype == bool
    assert (counts.sum(1) <= BlockMasking(8, **paper_masking(name, 8)).max_masked(32)).all()
    if name == "ibot":
        assert counts.max() <= 32 and 0.4 < (counts > 0).mean() < 0.6
    else:
        assert ((counts > 0).sum(1) == 16).all()
        strata = np.floor(64 * np.linspace(0.1, 0.5, 17, dtype=np.float32)[1:])
        assert (np.sort(np.where(counts > 0, counts, 0), axis=1)[:, 16:] <= strata).all()


def test_dinov2_replay_gives_keras_ssl_koleo_the_references_neighbours():
    # parity_step0's KoLeo sync: keras_ssl's distances to the rows the reference chose, not its own argmax.
    import types

    import parity_step0

    from keras_ssl import losses
    from keras_ssl.layers.block_masks import BlockMasking

    x = RNG.normal(size=(5, 3)).astype("float32")
    nearest = np.array([[4, 0, 1, 2, 3]], "int32")
    state = {"masks": np.zeros((1, 2, 4), "float32"), "nearest": nearest}
    with parity_step0.dinov2_keras(types.SimpleNamespace(masking=BlockMasking(2)), state):
        got = float(keras.ops.convert_to_numpy(losses.koleo(x)))
    u = _unit(x.astype(np.float64))
    expected = -np.mean(np.log(np.linalg.norm(u - u[nearest[0]] + 1e-8, axis=1) + 1e-8))
    assert got == pytest.approx(expected, rel=1e-5)
    assert got != pytest.approx(float(keras.ops.convert_to_numpy(losses.koleo(x))), rel=1e-3)


def test_step_verdict_allows_the_measured_noise_after_step0_only():
    import parity_step0

    reference, perturbed = [2.0, 3.0, 4.0], [2.0, 3.001, 4.01]
    assert parity_step0.verdict(reference, [2.0001, 3.0009, 3.991], perturbed, noise_factor=1)[0]
    assert parity_step0.verdict(reference, [2.0001, 3.0029, 3.971], perturbed, noise_factor=3)[0]
    assert parity_step0.verdict(reference, [2.001, 3.0, 4.0], perturbed)[:2] == (False, 0)  # step 0: rtol only
    assert parity_step0.verdict(reference, [2.0, 3.0, 4.02], perturbed, noise_factor=1)[:2] == (False, 2)
    assert parity_step0.verdict(reference, [2.0, 3.0, 4.04], perturbed, noise_factor=3)[:2] == (False, 2)
    assert not parity_step0.verdict(reference, [2.0, 3.0], perturbed)[0]


@pytest.mark.parametrize("align", [True, False])
def test_gradient_check_sees_what_the_loss_cannot(align, tmp_path, monkeypatch):
    """`--gradients`: keras_ssl's step-0 gradient is as near a float64 reference's as the float32 reference's is.

    DCLW's detached weights (keras_ssl's documented choice; dcl.py keeps their gradient) leave the
    step-0 loss equal; the gradient check fails them unless the reference takes the same choice.
    """
    import parity_step0

    extra = ("--gradients", "--align") if align else ("--gradients",)
    reference, _, ours = _step_sides("dclw", tmp_path, monkeypatch, steps=1, extra=extra)
    assert ours["loss"] == pytest.approx(reference["loss"], rel=1e-4, abs=1e-6)
    assert reference["grad_error"][0] < 1e-2, reference  # the float32 reference is near its float64 twin
    ok, cell = parity_step0.gradient_verdict(reference["grad_error"], ours["grad_error"])
    assert ok == align, cell


def test_gradient_error_is_the_relative_distance_from_the_float64_gradient():
    import parity_step0

    arrays = {"grad64/a": np.array([3.0, 0.0]), "grad64/b": np.array([[4.0]]), "grad32/a": np.array([3.0, 1.0])}
    arrays["grad32/b"] = np.array([[2.0]])
    # ||(0, 1, -2)|| / ||(3, 0, 4)|| = sqrt(5) / 5; the entries where g64 is not 0: |0| / 3 and |-2| / 4.
    assert parity_step0.gradient_error(arrays, "grad32/") == pytest.approx([np.sqrt(5) / 5, 0.25])
    with pytest.raises(ValueError, match="no grad/ gradient for \\['a'"):
        parity_step0.gradient_error(arrays, "grad/")
    assert parity_step0.gradient_verdict([1e-2, 0], [2.9e-2, 0])[0]
    assert not parity_step0.gradient_verdict([1e-2, 0], [3.2e-2, 0])[0]
    with pytest.raises(SystemExit):  # step 0's gradient only: refused before any run
        parity_step0.parse(["--gradients", "--steps", "2"])


def test_redrawn_views_are_the_ones_the_reference_trains_on():
    # parity.reference_views redraws from a fresh build and generator: the views of every step, in order.
    x = np.random.default_rng(2).integers(0, 256, size=(40, 32, 32, 3), dtype=np.uint8)
    args = parity.parse(["--batch-size", "16", "--width", "0.125", "--epochs", "2"])
    redraw = parity.reference_views(args, "simclr", 3, x, steps_per_epoch=2)
    method = torch_methods.build("simclr", 0.125, parity.shared_options(args, "simclr"), args.init, 2, 4, 3)
    gen, opt = torch_methods.views_generator(3), torch.optim.SGD(method.trainable(), lr=0.1)
    for epoch in range(2):
        order = parity.epoch_order(3, epoch, len(x), 16)
        stacked, count = redraw(order)
        assert count == 2 and stacked.shape == (2 * 2 * 16, 32, 32, 3)
        for i in range(2):
            rows = parity.torch_images(x[order[i * 16 : (i + 1) * 16]])
            _, views = parity.torch_step(method, opt, rows, gen, 2 * epoch + i)
            np.testing.assert_array_equal(stacked[i * 32 : (i + 1) * 32], torch.cat(views).permute(0, 2, 3, 1).numpy())
    with pytest.raises(SystemExit, match="differ in size"):
        parity.reference_views(args, "dino", 3, x, steps_per_epoch=2)


def test_each_side_run_on_the_others_views_starts_at_its_loss(tmp_path, monkeypatch):
    # The same weights and, with --keras-views reference or --torch-views keras, the same views: step 0's
    # losses agree (keras_ssl on Keras's torch backend, whose view maker the reference then draws from).
    rng = np.random.default_rng(4)
    np.savez(
        tmp_path / "cifar10.npz",
        x_train=rng.integers(0, 256, size=(64, 32, 32, 3), dtype=np.uint8),
        y_train=rng.integers(0, 10, size=64),
        x_test=rng.integers(0, 256, size=(16, 32, 32, 3), dtype=np.uint8),
        y_test=rng.integers(0, 10, size=16),
    )
    monkeypatch.setenv("KERAS_SSL_DATA_DIR", str(tmp_path))
    argv = ["--images", "32", "--test-images", "16", "--epochs", "1", "--batch-size", "16", "--width", "0.125"]
    argv += ["--init", "torchvision", "--workdir", str(tmp_path / "w"), "--lr", "0.01"]
    os.makedirs(tmp_path / "w")
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        reference = parity.run_torch(parity.parse(argv), "simclr", 0)
        ours = parity.run_keras(parity.parse(argv + ["--keras-views", "reference"]), "torch", "simclr", 0)
        own = parity.run_keras(parity.parse(argv), "torch", "simclr", 0)
        mirror = parity.run_torch(parity.parse(argv + ["--torch-views", "keras"]), "simclr", 0)
        saved = dict(np.load(tmp_path / "w" / "init_simclr_0_torchvision_w0.125.npz"))
        perturbed = parity.run_torch(parity.parse(argv + ["--perturb", "1e-3"]), "simclr", 0)
    finally:
        torch.set_num_threads(threads)
    assert ours["init_check"] < 1e-5
    assert ours["step_losses"][0] == pytest.approx(reference["step_losses"][0], rel=1e-4)
    assert own["step_losses"][0] != pytest.approx(reference["step_losses"][0], rel=1e-4)  # other views
    assert mirror["step_losses"][0] == pytest.approx(own["step_losses"][0], rel=1e-4)
    # --perturb: the reference's own noise floor; the arrays handed to keras_ssl stay the unscaled ones.
    resaved = np.load(tmp_path / "w" / "init_simclr_0_torchvision_w0.125.npz")
    assert all(np.array_equal(saved[k], resaved[k]) for k in saved)
    first, again = reference["step_losses"][0], perturbed["step_losses"][0]
    assert first != again and again == pytest.approx(first, rel=1e-2)
