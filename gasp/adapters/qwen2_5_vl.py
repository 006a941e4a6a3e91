"""Qwen2.5-VL adapter: the Qwen2-VL layout plus real time in the temporal M-RoPE axis.

Temporal position of grid t = int(t * tokens_per_second * second_per_grid_ts), so the fps
must be passed; raw frames without it are taken as 24 fps by the processor and the ids
collapse. A grid spans one frame in "duplicate" mode (1/fps s) and tp frames in
"merged" mode (tp/fps s).
"""
from __future__ import annotations

import logging

import numpy as np
import torch

from gasp.adapters import register_adapter
from gasp.adapters.qwen2_vl import Qwen2VLAdapter

logger = logging.getLogger(__name__)


@register_adapter
class Qwen2_5_VLAdapter(Qwen2VLAdapter):
    model_type = "qwen2_5_vl"
    default_tokens_per_second = 2  # released checkpoints

    def _window_order(self, visual, grid: torch.Tensor) -> torch.Tensor:
        """The vision blocks run in window-attention order (merge units permuted by ``window_index``); the merger
        reads them so, and only its output is put back in token order (transformers' Qwen2.5-VL vision forward)."""
        from transformers.vision_utils import get_vision_window_index

        index, _ = get_vision_window_index(grid, spatial_merge_size=visual.spatial_merge_size,
                                           window_size=visual.window_size, patch_size=visual.patch_size)
        return index

    def _video_timing(self, grid_frames, fps):
        n_grids = len(grid_frames)
        seconds = len(grid_frames[0]) / fps  # one frame per grid when duplicated, tp when merged
        tps = self._vision("tokens_per_second", self.default_tokens_per_second)
        t_ids = (np.arange(n_grids) * (tps * seconds)).astype(np.int64)
        if n_grids > 1 and len(np.unique(t_ids)) < n_grids:
            logger.warning(
                "fps=%g gives %d distinct temporal M-RoPE ids for %d frame grids "
                "(tokens_per_second=%s); frames share temporal positions", fps, len(np.unique(t_ids)), n_grids, tps,
            )
        return {"second_per_grid_ts": torch.tensor([seconds], dtype=torch.float32)}
