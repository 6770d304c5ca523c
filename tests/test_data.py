import numpy as np
import pytest

from tasks.data import Dataset, generate_dataset, split_dataset


def test_generate_is_seeded_and_typed():
    a = generate_dataset.fn(200, 10, 5, seed=1)
    b = generate_dataset.fn(200, 10, 5, seed=1)
    c = generate_dataset.fn(200, 10, 5, seed=2)
    assert a.X.shape == (200, 10) and a.X.dtype == np.float32 and a.y.dtype == np.int64
    assert set(np.unique(a.y)) == {0, 1}
    np.testing.assert_array_equal(a.X, b.X)
    assert not np.array_equal(a.X, c.X)


def test_generate_rejects_more_informative_than_features():
    with pytest.raises(ValueError, match="n_informative"):
        generate_dataset.fn(100, 3, 5, seed=0)


def test_split_sizes_are_stratified_disjoint_and_seeded():
    data = generate_dataset.fn(1000, 10, 5, seed=0)
    s = split_dataset.fn(data, test_size=0.2, val_size=0.1, seed=0)
    assert (len(s.train), len(s.val), len(s.test)) == (700, 100, 200)
    rows = {r.tobytes() for part in (s.train, s.val, s.test) for r in part.X}
    assert len(rows) == 1000  # disjoint and complete
    for part in (s.train, s.val, s.test):
        assert abs(part.y.mean() - data.y.mean()) < 0.02
    again = split_dataset.fn(data, test_size=0.2, val_size=0.1, seed=0)
    np.testing.assert_array_equal(s.test.X, again.test.X)


def test_split_rejects_bad_fractions():
    data = generate_dataset.fn(100, 10, 5, seed=0)
    with pytest.raises(ValueError, match="test_size"):
        split_dataset.fn(data, test_size=0.6, val_size=0.5, seed=0)


def test_dataset_checks_shapes():
    with pytest.raises(ValueError, match="shape"):
        Dataset(np.zeros((3, 2), np.float32), np.zeros(4, np.int64))
