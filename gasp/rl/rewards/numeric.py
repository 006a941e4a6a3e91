"""A number: R_acc 1 within 25 % relative error of the truth (SpatialRGPT's success, as VST scores numbers),
R_format 1 when a number parses."""
from __future__ import annotations

from gasp.data.metric_qa import parse_number
from gasp.rl.rewards import register

TOLERANCE = 0.25


@register
class NumericReward:
    kind = "numeric"

    def score(self, text: str, item: dict) -> dict[str, float]:
        """``item``: {"value": the true number}."""
        pred = parse_number(text)
        if pred is None:
            return {"acc": 0.0, "format": 0.0}
        return {"acc": float(abs(pred - item["value"]) <= TOLERANCE * abs(item["value"])), "format": 1.0}
