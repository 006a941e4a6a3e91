"""Micro-batches cross from DataLoader workers as one packed buffer (issue 19): the same tensors come back."""
import pickle
from collections import namedtuple

import torch
from transformers import BatchFeature

from gasp.train.geo_batch import GeoTargets
from gasp.train.loader import Packed, _map_tensors

Pair = namedtuple("Pair", "a b")


def _batch():
    g = torch.Generator().manual_seed(0)
    return {
        "kind": "geo",
        "inputs": BatchFeature({"input_ids": torch.randint(0, 9, (1, 7), generator=g),
                                "pixel_values_videos": torch.randn(5, 11, generator=g).t(),     # not contiguous
                                "video_grid_thw": torch.tensor([[2, 3, 4]], dtype=torch.int64)}),
        "targets": GeoTargets(anchor_tok=torch.arange(3), gt_tok=torch.tensor([[0, -1, 2]]),
                              valid=torch.tensor([[True, False, True]]), gt_depth=torch.tensor([[1.5, float("nan"), 2.0]]),
                              tok_depth=torch.empty(1, 0), query_frame=0),
        "positions": [torch.tensor(3.25, dtype=torch.float64), torch.ones(3, dtype=torch.bfloat16)],
        "pair": Pair(torch.tensor([1, 2], dtype=torch.int32), 4),
        "grids": (2, 12),
    }


def _leaves(x):
    out = []
    _map_tensors(x, lambda t: out.append(t) or t)
    return out


def test_pack_then_unpack_gives_the_same_tensors_and_structure():
    want, got = _batch(), Packed.pack(_batch())
    assert _leaves(got.batch) and not any(isinstance(t, torch.Tensor) for t in _leaves(got.batch))
    got = pickle.loads(pickle.dumps(got)).unpack()          # as the DataLoader's queue hands it over
    a, b = _leaves(want), _leaves(got)
    assert len(a) == len(b) == 11
    for x, y in zip(a, b):
        assert (x.dtype, x.shape) == (y.dtype, y.shape)
        assert torch.equal(x.contiguous().view(-1).view(torch.uint8), y.contiguous().view(-1).view(torch.uint8))
    assert isinstance(got["inputs"], BatchFeature) and isinstance(got["targets"], GeoTargets)
    assert isinstance(got["pair"], Pair) and got["pair"].b == 4 and got["grids"] == (2, 12)
    assert got["targets"].query_frame == 0 and got["kind"] == "geo"


def test_a_packed_batch_holds_one_tensor_whatever_the_batch_holds():
    p = Packed.pack(_batch())
    found = []

    class Spy(pickle.Pickler):
        def persistent_id(self, obj):
            if isinstance(obj, torch.Tensor):
                found.append(obj)
            return None

    import io

    Spy(io.BytesIO()).dump(p)
    assert len(found) == 1 and found[0] is p.buffer and p.buffer.dtype == torch.uint8
    assert all(s.offset % 64 == 0 for s in _leaves(p.batch))
