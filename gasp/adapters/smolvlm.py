"""SmolVLM2 adapter (`model_type` "smolvlm"), and the Idefics3 layout it shares (gasp/adapters/idefics3.py).

Shape vocabulary: F frames, S x S vision input (`vision_config.image_size`), p patch size,
n = S // p patches per side, s = `scale_factor`, h x w = n/s x n/s tokens per frame.

Vision path (modeling_smolvlm / modeling_idefics3): SigLIP patchifies the S x S frame into
n x n patches (the conv floors: 384 // 14 = 27, so the last S - n*p pixels are unused);
the connector's pixel shuffle folds every s x s block of patches into one token, row-major,
so token (r, c) covers patches [s*r, s*r + s) x [s*c, s*c + s), i.e. s*p resized pixels
(SmolVLM2-2.2B: S = 384, p = 14, s = 3: 9 x 9 = 81 tokens of 42 px covering 378 px). The
features replace the <image> tokens in order (masked_scatter); the LLM (Llama) is causal.

Image splitting is OFF: every frame is one "global" image, as the image processor does with
`do_image_splitting=False` and as the video processor always does. So there are no
<row_i_col_j> tiles and no "\\n" between tile rows; each frame's grid is framed by
    <fake_token_around_image> <global-img> <image> x h*w <fake_token_around_image>
and `layout.positions[f]` are the h*w <image> positions of frame f (the separators are not in it).

Frames modes:
- "video" (default): the processor's video prompt (processing_smolvlm.replace_video_token),
      "<|im_start|>User: You are provided the following series of {F in words} frames from a
      {H:MM:SS} [H:MM:SS] video.\\n" + per frame "\\nFrame from {MM:SS}:" + grid, then
      "\\n\\n" prompt "<end_of_utterance>\\nAssistant:",
  with frame f at f / fps seconds and the duration int((F - 1) / fps) (what the processor writes
  for F frames at `fps` whose VideoMetadata has no duration); frames resized to the video size
  (longest edge, default S);
- "images": the frames as F images, "<|im_start|>User:" + F grids + prompt "<end_of_utterance>\\nAssistant:";
  frames resized to the image processor's `size` (longest edge, default 4 S).
Pixels follow the Idefics3/SmolVLM image processor with splitting off: LANCZOS resize of the
uint8 frame to that longest edge (aspect kept, even short side), then to S x S, rescale and
normalise (mean = std = 0.5), checked against `SmolVLMImageProcessorPil` to 1e-5. The video
processor does the same with torchvision, which rounds slightly differently. The aspect
change is folded into the per-axis token size, (s*p * H/S, s*p * W/S).
Dialogue: answers " answer<end_of_utterance>", then "\\n", further rounds "User: human<end_of_utterance>\\nAssistant:".
"""
from __future__ import annotations

from datetime import timedelta

import torch

from gasp.adapters import register_adapter
from gasp.adapters.base import ModelAdapter, VisualLayout
from gasp.adapters.preprocess import HALF_MEAN_STD, check_frames, normalize_frames, processor_mean_std, resize_frames

MAX_IMAGE_SIZE = 4096  # the processors' absolute cap on the longest edge

_ONES = "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen " \
        "seventeen eighteen nineteen".split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()


def number_words(n: int) -> str:
    """English words for 0 <= n < 1000 as num2words writes them ("twenty-one", "one hundred and five")."""
    if not 0 <= n < 1000:
        raise ValueError(f"cannot write {n} frames in words (0..999)")
    if n < 20:
        return _ONES[n]
    if n < 100:
        return _TENS[n // 10] + ("-" + _ONES[n % 10] if n % 10 else "")
    rest = n % 100
    return _ONES[n // 100] + " hundred" + (" and " + number_words(rest) if rest else "")


def longest_edge_size(height: int, width: int, longest: int) -> tuple[int, int]:
    """The processors' aspect-keeping resize: longest side -> `longest`, short side int() and made even."""
    longest = min(longest, MAX_IMAGE_SIZE)
    aspect = width / height
    if width >= height:
        width, height = longest, int(longest / aspect)
        height += height % 2
    else:
        height, width = longest, int(longest * aspect)
        width += width % 2
    return max(height, 1), max(width, 1)


def _longest_edge(proc, attr: str) -> int | None:
    value = getattr(proc, attr, None)
    if value is None:
        return None
    edge = value.get("longest_edge") if isinstance(value, dict) else getattr(value, "longest_edge", None)
    return int(edge) if edge else None


@register_adapter
class SmolVLMAdapter(ModelAdapter):
    model_type = "smolvlm"
    frames_modes = ("video", "images")
    vision_attr = "vision_model"
    # Released-checkpoint values (SmolVLM2-2.2B), used when no config is given.
    default_image_size = 384
    default_patch_size = 14
    default_scale_factor = 3
    default_image_token_id = 49190
    default_mean_std = (HALF_MEAN_STD, HALF_MEAN_STD)
    image_longest_factor = 4  # image processor `size` = 4 S in every released checkpoint

    # ---- structure: Idefics3-style models call the LLM `text_model` -------------------------
    def inner_model(self, model):
        m = self.unwrap(model)
        inner = getattr(m, "model", m)
        if not hasattr(inner, "text_model"):
            raise TypeError(f"{type(m).__name__} has no text_model; is it a {self.model_type} VLM?")
        return inner

    def decoder_layers(self, model) -> torch.nn.ModuleList:
        return self.inner_model(model).text_model.layers

    def lora_target_modules(self, model=None) -> str:
        return r".*text_model\.layers\.\d+\.(self_attn\.(q|k|v|o)_proj|mlp\.(gate|up|down)_proj)"

    # ---- sizes ----------------------------------------------------------------------------
    @property
    def image_size(self) -> int:
        return int(self._vision("image_size", self.default_image_size))

    @property
    def patch_size(self) -> int:
        return int(self._vision("patch_size", self.default_patch_size))

    @property
    def scale_factor(self) -> int:
        return int(getattr(self.config, "scale_factor", self.default_scale_factor))

    @property
    def token_px(self) -> int:
        """Resized-frame pixels per token along each axis."""
        return self.scale_factor * self.patch_size

    def token_grid(self) -> tuple[int, int]:
        n = self.image_size // self.patch_size
        if n % self.scale_factor:
            raise ValueError(f"{n} patches per side is not a multiple of scale_factor={self.scale_factor}")
        return n // self.scale_factor, n // self.scale_factor

    def _resize_edges(self, processor, mode: str) -> tuple[int, int]:
        """(longest edge of the first resize, S of the square second resize) of the processor `mode` uses."""
        s = self.image_size
        attr = "video_processor" if mode == "video" else "image_processor"
        proc = getattr(processor, attr, None)
        default = s if mode == "video" else self.image_longest_factor * s
        longest = _longest_edge(proc, "size") or default
        square = _longest_edge(proc, "max_image_size") or s
        if square != s:
            raise ValueError(f"the {attr} squares frames to {square} px but the vision tower takes {s}")
        return longest, square

    # ---- inputs -----------------------------------------------------------------------------
    def _start(self, tok) -> str:
        """The chat template's first token, written there literally (not added as BOS by the tokenizer)."""
        return "<|im_start|>"

    def _prompt_text(self, tok, mode: str, n_frames: int, per_frame: str, prompt: str, fps: float) -> str:
        eou = "<end_of_utterance>\nAssistant:"
        if mode == "images":
            return self._start(tok) + "User:" + per_frame * n_frames + prompt + eou
        duration = timedelta(seconds=int((n_frames - 1) / fps))  # the last timestamp: metadata without a duration
        text = (f"You are provided the following series of {number_words(n_frames)} frames "
                f"from a {duration} [H:MM:SS] video.\n")
        for f in range(n_frames):
            sec = f / fps
            text += f"\nFrame from {int(sec // 60):02d}:{int(sec % 60):02d}:" + per_frame
        return self._start(tok) + "User: " + text + "\n\n" + prompt + eou

    def prepare_inputs(self, frames, *, processor_or_tokenizer, prompt="", frames_mode=None, fps=1.0, size=None,
                       answer=None, turns=None):
        mode = self._check_mode(frames_mode)
        frames = check_frames(frames)
        if not fps > 0:
            raise ValueError(f"fps must be positive, got {fps}")
        n_frames, height, width = frames.shape[:3]
        s = self.image_size
        self._check_square_input(height, width, size, None)  # any frame size works: it is resized to S x S
        tpx = self.token_px
        tok = self._tokenizer(processor_or_tokenizer)
        cfg_id = self.default_image_token_id if self.config is None else getattr(self.config, "image_token_id", None)
        image_id = self._token_id(tok, "<image>", cfg_id)
        h, w = self.token_grid()

        longest, square = self._resize_edges(processor_or_tokenizer, mode)
        mean, std = processor_mean_std(processor_or_tokenizer, *self.default_mean_std)
        first = resize_frames(frames, longest_edge_size(height, width, longest), "lanczos")
        x = normalize_frames(resize_frames(first, (square, square), "lanczos"), mean, std)  # (F, 3, S, S)

        per_frame = "<fake_token_around_image><global-img>" + "<image>" * (h * w) + "<fake_token_around_image>"
        text = self._prompt_text(tok, mode, n_frames, per_frame, prompt, fps)
        input_ids = torch.tensor([tok(text, add_special_tokens=False)["input_ids"]], dtype=torch.long)
        where = torch.nonzero(input_ids[0] == image_id).flatten()
        if where.numel() != n_frames * h * w:
            raise ValueError(f"{where.numel()} <image> tokens in the sequence, expected {n_frames} x {h * w} "
                             "(does the prompt contain <image>?)")
        inputs = {
            "input_ids": input_ids,
            "attention_mask": torch.ones_like(input_ids),
            "pixel_values": torch.from_numpy(x)[None],  # (1, F, 3, S, S)
        }
        layout = VisualLayout(
            positions=where.reshape(n_frames, h, w),
            frame_ids=torch.arange(n_frames),
            grid=(h, w),
            image_size=(height, width),
            token_size=(tpx * height / s, tpx * width / s),
        )
        return self._add_dialogue(inputs, tok, answer, turns), layout

    # ---- dialogue: "Assistant: answer<end_of_utterance>\nUser: ...<end_of_utterance>\nAssistant:" ----
    def _answer_text(self, answer):
        return " " + answer

    def _end_of_turn(self, tok):
        return [self._token_id(tok, "<end_of_utterance>")]

    def _user_turn(self, tok, human):
        return (self._encode(tok, "User: "), self._user_text(tok, human, "turn human text"),
                self._encode(tok, "<end_of_utterance>\nAssistant:"))
