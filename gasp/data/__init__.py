"""Data for the LM stream (the L_LM term, paper Sec. 4): LLaVA-Video-format instruction data,
synthetic spatial QA written in that format, and the correspondence-as-VQA fairness baseline
(paper Sec. 5.4).

    ds = InstructionDataset("instruct.json", video_root="DIR", num_frames=8)
    ex = ds[0]                                   # InstructionExample, or None if its video is missing
    inputs, layout = ex.adapter_inputs(adapter, tokenizer)   # inputs["labels"]: loss on answer tokens
"""

from gasp.data.correspondence_vqa import CorrespondenceSample, make_samples, write_correspondence_vqa
from gasp.data.instruct import (
    InstructionDataError, InstructionDataset, InstructionExample, load_records, parse_record,
)
from gasp.data.spatial_qa import QAItem, QAThresholds, prompt_text, questions_for_scene
from gasp.data.synthetic_instruct import render_scenes, scenes_from_tracks, write_synthetic_instruct

__all__ = [
    "CorrespondenceSample", "InstructionDataError", "InstructionDataset", "InstructionExample", "QAItem",
    "QAThresholds", "load_records", "make_samples", "parse_record", "prompt_text", "questions_for_scene",
    "render_scenes", "scenes_from_tracks", "write_correspondence_vqa", "write_synthetic_instruct",
]
