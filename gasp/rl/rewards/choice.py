"""Multiple choice: R_acc 1 for the right option's text (case and surrounding space ignored), R_format 1 when the
answer is one of the options."""
from __future__ import annotations

from gasp.rl.rewards import register


@register
class ChoiceReward:
    kind = "choice"

    def score(self, text: str, item: dict) -> dict[str, float]:
        """``item``: {"options": [...], "answer_index": i}."""
        ans = text.strip().lower().rstrip(".")
        options = [o.lower() for o in item["options"]]
        return {"acc": float(ans == options[item["answer_index"]]), "format": float(ans in options)}
