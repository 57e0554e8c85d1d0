"""DeepCluster-v2 (Caron et al. 2020): spherical k-means over a memory bank, and the cross-entropy to its clusters."""

from keras import ops

from keras_ssl.losses.common import _check_positive, _check_rank, l2_normalize


def spherical_kmeans(features, centroids_init, iterations=10):
    """Spherical k-means with a fixed number of rounds, as DeepCluster-v2 clusters its memory bank.

    Each round assigns every row to its most similar centroid (largest dot
    product), then moves each centroid to the mean of its rows and
    L2-normalises it; a centroid without rows keeps its place (the official
    handling of empty clusters). A last assignment step follows the last
    round, so the assignments are those of the returned centroids. Static
    shapes throughout (`segment_sum`, no masks of data-dependent size), in
    float32, without gradient.

    Args:
        features: `(N, D)` L2-normalised rows (the memory bank).
        centroids_init: `(K, D)` starting centroids (DeepCluster-v2: `K`
            distinct random rows of `features`).
        iterations: number of update rounds, >= 0 (paper: 10).

    Returns:
        `(centroids, assignments)`: `(K, D)` float32 unit centroids and
        `(N,)` int32 cluster indices.

    Example:
        >>> from keras_ssl.losses.deepcluster import spherical_kmeans
        >>> points = np.array([[1, 0], [0.9, 0.1], [0, 1], [0.1, 0.9]], "float32")
        >>> centroids, assignments = spherical_kmeans(points, points[[0, 1]], iterations=3)
        >>> ops.convert_to_numpy(assignments).tolist()
        [0, 0, 1, 1]
    """
    if int(iterations) != iterations or iterations < 0:
        raise ValueError(f"`iterations` must be an integer >= 0, got {iterations}.")
    features = ops.stop_gradient(ops.cast(features, "float32"))
    centroids = ops.stop_gradient(ops.cast(centroids_init, "float32"))
    _check_rank("features", features, 2)
    _check_rank("centroids_init", centroids, 2)
    k = ops.shape(centroids)[0]
    ones = ops.ones_like(features[:, :1])
    assignments = ops.argmax(ops.matmul(features, ops.transpose(centroids)), axis=1)
    for _ in range(int(iterations)):
        sums = ops.segment_sum(features, assignments, num_segments=k)
        counts = ops.segment_sum(ones, assignments, num_segments=k)
        centroids = l2_normalize(ops.where(counts > 0, sums / ops.maximum(counts, 1.0), centroids))
        assignments = ops.argmax(ops.matmul(features, ops.transpose(centroids)), axis=1)
    return centroids, ops.cast(assignments, "int32")


def deepcluster_v2(scores, assignments, temperature=0.1):
    """DeepCluster-v2's loss: every crop's scores classify its sample into its k-means cluster.

    For each head `h` (one k-means clustering), the cross-entropy of
    `softmax(scores[h][c] / temperature)` against the sample's cluster
    `assignments[h]`, averaged over every crop `c` and sample that has a
    cluster; then averaged over the heads. A sample whose assignment is
    negative (none yet: the first epoch) is left out; a head with none has
    loss 0.

    Args:
        scores: list over heads of lists over crops of `(B, K_h)` scores
            (cosines of the crop's embedding to the frozen centroids).
        assignments: `(H, B)` int cluster of each sample per head, -1 for none.
        temperature: softmax temperature, > 0 (paper: 0.1).

    Returns:
        scalar float32 loss.

    Example:
        >>> from keras_ssl.losses.deepcluster import deepcluster_v2
        >>> scores = [[np.array([[1.0, 0.0], [0.0, 1.0]]), np.array([[0.5, 0.5], [0.0, 1.0]])]]
        >>> round(float(deepcluster_v2(scores, np.array([[0, 1]]), temperature=1.0)), 4)
        0.4082
        >>> float(deepcluster_v2(scores, np.array([[-1, -1]])))   # no cluster yet
        0.0
    """
    _check_positive(temperature=temperature)
    if not scores or any(not crops for crops in scores):
        raise ValueError("`scores` must be a non-empty list over heads of non-empty lists over crops.")
    assignments = ops.cast(assignments, "int32")
    _check_rank("assignments", assignments, 2)
    if ops.shape(assignments)[0] is not None and ops.shape(assignments)[0] != len(scores):
        raise ValueError(f"`assignments` has {ops.shape(assignments)[0]} heads, `scores` {len(scores)}.")
    total = 0.0
    for h, crops in enumerate(scores):
        target = assignments[h]
        valid = target >= 0
        per_crop = []
        for s in crops:
            log_p = ops.log_softmax(ops.cast(s, "float32") / temperature, axis=-1)
            picked = ops.take_along_axis(log_p, ops.maximum(target, 0)[:, None], axis=1)[:, 0]
            per_crop.append(ops.sum(ops.where(valid, -picked, 0.0)))
        count = ops.sum(ops.cast(valid, "float32")) * len(crops)
        total = total + ops.where(count > 0, ops.sum(ops.stack(per_crop)) / ops.maximum(count, 1.0), 0.0)
    return total / len(scores)
