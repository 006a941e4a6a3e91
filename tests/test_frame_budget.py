"""gasp.models.budget: how many frames of a size fit a model's context, counted with the family's own inputs."""
import numpy as np
import pytest

from gasp.models import budget
from gasp.models.tiny import build_tiny_config
from gasp.models.tiny_common import build_tiny_tokenizer


@pytest.mark.parametrize("name", ["tiny-llava", "tiny-qwen2.5-vl"])
def test_budget_is_the_largest_frame_count_whose_input_fits(monkeypatch, name):
    from gasp.adapters import get_adapter

    tok = build_tiny_tokenizer(name)
    config = build_tiny_config(name, tok)
    adapter = get_adapter(config)
    length = lambda n: adapter.prepare_inputs(np.zeros((n, 64, 80, 3), np.uint8), processor_or_tokenizer=tok,  # noqa
                                              prompt="describe the video.")[0]["input_ids"].shape[1]
    per = length(3) - length(2)
    context = length(5) + budget.TEXT_MARGIN                        # exactly five frames fit
    config.get_text_config().max_position_embeddings = context
    monkeypatch.setattr(budget, "_config_and_processor", lambda n, t: (config, tok))
    b = budget.frame_budget(name, (64, 80), cap=24)
    assert b["max_frames"] == 5 and b["tokens_per_frame"] == per and b["context"] == context
    assert length(6) + budget.TEXT_MARGIN > context
    assert budget.frame_budget(name, (64, 80), cap=3)["max_frames"] == 3
    config.get_text_config().max_position_embeddings = length(1) + budget.TEXT_MARGIN
    with pytest.raises(budget.ModelBudgetError, match="two do not fit its"):
        budget.frame_budget(name, (64, 80))


def test_unknown_model_is_a_clear_error():
    with pytest.raises(budget.ModelBudgetError, match="unknown model 'no-such-model'"):
        budget.frame_budget("no-such-model", (64, 64))
