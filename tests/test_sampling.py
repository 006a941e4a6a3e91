"""Sampler statistics (paper Sec. 5.2) and scene-level splits."""
import numpy as np
import pytest

from tracks.sampling import SamplingError, eval_frames, eval_offsets, sample_train_frames


def test_train_sampler_statistics():
    rng = np.random.default_rng(0)
    T, R = 300, 48
    lengths, rel = [], []
    for _ in range(3000):
        ids = sample_train_frames(T, rng, min_frames=8, max_frames=24, radius=R)
        assert len(np.unique(ids)) == len(ids)                 # no repeated frames
        assert ids.min() >= 0 and ids.max() < T
        assert np.all(np.abs(ids[1:] - ids[0]) <= R)           # inside the window
        assert np.all(np.diff(ids[1:]) > 0)                    # time order after the anchor
        lengths.append(len(ids))
        if R <= ids[0] < T - R:                                # window not clipped
            rel.extend(ids[1:] - ids[0])
    lengths = np.array(lengths)
    assert lengths.min() == 8 and lengths.max() == 24
    counts = np.bincount(lengths, minlength=25)[8:25]
    assert counts.min() > 0.6 * counts.mean()                  # F roughly uniform on [8, 24]
    hist = np.histogram(rel, bins=np.arange(-R, R + 2) - 0.5)[0]
    hist = np.delete(hist, R)                                  # offset 0 is the anchor itself
    assert hist.std() / hist.mean() < 0.15                     # offsets uniform on the window
    assert np.mean(rel) == pytest.approx(0, abs=0.6)


def test_train_sampler_short_video():
    rng = np.random.default_rng(1)
    ids = sample_train_frames(10, rng, min_frames=8, max_frames=24, radius=48)
    assert 8 <= len(ids) <= 10
    with pytest.raises(SamplingError, match="fewer than min_frames=8"):
        sample_train_frames(5, rng)


def test_eval_offsets_cover_every_dt():
    seen = np.zeros(25, int)
    for s in range(5):
        off = eval_offsets(s, n_frames=8, max_dt=24)
        assert len(off) == 7 and off[0] == 1 and off[-1] == 24
        seen[off] += 1
    assert (seen[1:] > 0).all()                                # 5 sequences cover 1..24


def test_eval_frames_layout():
    rng = np.random.default_rng(3)
    for s in range(20):
        ids = eval_frames(32, rng, sequence_index=s)
        assert len(ids) == 8 and ids.min() >= 0 and ids.max() < 32
        assert np.array_equal(np.sort(np.abs(ids[1:] - ids[0])), eval_offsets(s))
    with pytest.raises(SamplingError, match="at least max_dt"):
        eval_frames(20, rng)
