"""Instruction data in the LLaVA-Video-178K format: the L_LM stream of the paper's total loss (Sec. 4).

Shape vocabulary: F sampled frames, H x W pixels.

A record (one element of a .json list, or one line of a .jsonl file):

    {"id": "...", "video": "rel/path.mp4" | "rel/frames_dir",
     "conversations": [{"from": "human", "value": "<video>\\n question"},
                       {"from": "gpt", "value": "answer"}, ...]}

`video` is relative to `video_root` (an absolute path is used as is). A folder holds the
frames as *.png / *.jpg / *.jpeg files in sorted name order; a file is decoded with PyAV
(the optional `gasp[video]` extra). F frames are sampled uniformly over the whole clip,
`np.linspace(0, T - 1, F)` rounded, as LLaVA-Video does; a clip shorter than F repeats frames.
`num_frames=None` reads every frame (e.g. the 2-frame correspondence VQA "videos").

Validation happens when the dataset is built, for every record, so a bad file fails at
start-up and not hours into a run: exactly one video per record and exactly one `<video>`
placeholder, in the first human turn (the adapters put the frames before the first prompt);
turns alternate human, gpt, ..., gpt. Each violation raises `InstructionDataError` naming
the file and the record id. A video that is missing or cannot be decoded is not an error:
it is logged, `__getitem__` returns None and the counters grow (see `InstructionDataset`).
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

VIDEO_TOKEN = "<video>"
FRAME_SUFFIXES = (".png", ".jpg", ".jpeg")


class InstructionDataError(ValueError):
    """A malformed instruction file or record."""


@dataclass
class InstructionExample:
    frames: np.ndarray          # (F, H, W, 3) uint8 RGB, sampled uniformly over the clip
    prompt: str                 # first human turn, `<video>` placeholder removed
    answer: str                 # first gpt turn
    turns: list[tuple[str, str]] = field(default_factory=list)  # further (human, gpt) rounds
    id: str = ""
    frame_indices: np.ndarray | None = None  # (F,) int64 indices of the sampled frames in the clip
    geometry: dict | None = None  # gasp's synthetic records: {"scene": name, "frames": the clip's frames in that
                                  # scene of the tracks file the record was made from}; None for other data

    @property
    def source_frames(self) -> np.ndarray | None:
        """(F,) the sampled frames' numbers in the record's scene (``geometry``), or None."""
        if self.geometry is None or self.frame_indices is None:
            return None
        return np.asarray(self.geometry["frames"], dtype=np.int64)[self.frame_indices]

    def adapter_inputs(self, adapter, processor_or_tokenizer, **kwargs):
        """`adapter.prepare_inputs` with this example's frames and dialogue -> (inputs with labels, layout)."""
        return adapter.prepare_inputs(self.frames, processor_or_tokenizer=processor_or_tokenizer,
                                      prompt=self.prompt, answer=self.answer, turns=self.turns, **kwargs)


def load_records(path: str | os.PathLike) -> list[dict]:
    """The records of a .json (a list) or .jsonl (one object per line) file."""
    path = Path(path)
    if not path.is_file():
        raise InstructionDataError(f"instruction file {path} does not exist")
    try:
        if path.suffix == ".jsonl":
            with open(path, encoding="utf-8") as fh:
                records = [json.loads(line) for line in fh if line.strip()]
        else:
            with open(path, encoding="utf-8") as fh:
                records = json.load(fh)
    except json.JSONDecodeError as e:
        raise InstructionDataError(f"{path} is not valid JSON{'L' if path.suffix == '.jsonl' else ''}: {e}") from e
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise InstructionDataError(f"{path} must hold a list of record objects (or one object per line for .jsonl)")
    return records


def parse_record(record: dict, where: str) -> tuple[str, str, str, list[tuple[str, str]]]:
    """Validate one record; return (video, prompt, answer, turns). `where` names it in errors."""
    video = record.get("video")
    if isinstance(video, list):  # some LLaVA exports wrap a single video in a list
        if len(video) != 1:
            raise InstructionDataError(f"{where}: {len(video)} videos in one record; exactly one is supported")
        video = video[0]
    if not isinstance(video, str) or not video:
        raise InstructionDataError(f"{where}: record has no 'video' path")
    conv = record.get("conversations")
    if not isinstance(conv, list) or len(conv) < 2:
        raise InstructionDataError(f"{where}: 'conversations' must be a list of at least one human and one gpt turn")
    for k, turn in enumerate(conv):
        expected = "human" if k % 2 == 0 else "gpt"
        if not isinstance(turn, dict) or turn.get("from") != expected or not isinstance(turn.get("value"), str):
            got = turn.get("from") if isinstance(turn, dict) else type(turn).__name__
            raise InstructionDataError(f"{where}: turn {k} is from {got!r}, expected {expected!r} "
                                       "(turns must alternate human, gpt, ... and carry a string 'value')")
    if len(conv) % 2:
        raise InstructionDataError(f"{where}: the conversation ends with a human turn without a gpt answer")
    counts = [t["value"].count(VIDEO_TOKEN) for t in conv]
    if sum(counts) != 1 or counts[0] != 1:
        raise InstructionDataError(
            f"{where}: found {sum(counts)} {VIDEO_TOKEN} placeholder(s) (per turn {counts}) for 1 video; "
            f"exactly one is required, in the first human turn")
    prompt = conv[0]["value"].replace(VIDEO_TOKEN, "").strip()
    pairs = [(conv[k]["value"].strip(), conv[k + 1]["value"].strip()) for k in range(0, len(conv), 2)]
    return video, prompt, pairs[0][1], pairs[1:]


def sample_indices(total: int, num_frames: int) -> np.ndarray:
    """(F,) int64 frame indices spread uniformly over [0, total - 1], both ends included."""
    if total < 1:
        raise ValueError("cannot sample frames from an empty clip")
    return np.round(np.linspace(0, total - 1, num_frames)).astype(np.int64)


def read_frame_folder(folder: Path, num_frames: int | None) -> tuple[np.ndarray, np.ndarray]:
    """(F, H, W, 3) uint8 frames and their (F,) indices from a folder of image files (None: all)."""
    from PIL import Image

    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in FRAME_SUFFIXES)
    if not files:
        raise OSError(f"no {'/'.join(FRAME_SUFFIXES)} frames in {folder}")
    idx = sample_indices(len(files), num_frames or len(files))
    frames = []
    for i in idx:
        with Image.open(files[i]) as im:
            frames.append(np.asarray(im.convert("RGB")))
    if len({f.shape for f in frames}) != 1:
        raise OSError(f"frames in {folder} differ in size: {sorted({f.shape for f in frames})}")
    return np.stack(frames), idx


def write_frame_folder(frames: np.ndarray, folder: Path) -> None:
    """(F, H, W, 3) uint8 -> folder/000.png, 001.png, ...; stale NNN.png frames of an earlier run are removed."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    names = {f"{k:03d}.png" for k in range(len(frames))}
    for old in folder.glob("[0-9][0-9][0-9].png"):
        if old.name not in names:  # the loader reads every frame file, so leftovers would join the video
            old.unlink()
    for k, frame in enumerate(frames):
        Image.fromarray(frame).save(folder / f"{k:03d}.png")


def read_video_file(path: Path, num_frames: int | None) -> tuple[np.ndarray, np.ndarray]:
    """(F, H, W, 3) uint8 frames and their (F,) indices decoded from a video file with PyAV (None: all)."""
    try:
        import av
    except ImportError as e:
        raise ImportError(f"decoding {path} needs PyAV: pip install gasp[video]  (or pip install av)") from e
    with av.open(str(path)) as container:
        total = container.streams.video[0].frames
    if total <= 0:  # the container does not say; count by decoding
        with av.open(str(path)) as container:
            total = sum(1 for _ in container.decode(video=0))
    idx = sample_indices(total, num_frames or total)
    wanted, last = set(idx.tolist()), int(idx.max())
    got: dict[int, np.ndarray] = {}
    with av.open(str(path)) as container:
        for k, frame in enumerate(container.decode(video=0)):
            if k in wanted:
                got[k] = frame.to_ndarray(format="rgb24")
            if k >= last:
                break
    if len(got) < len(wanted):
        # The header's frame count was too high: resample over the frames that really exist.
        if not got:
            raise OSError(f"{path} has no decodable video frames")
        return _read_video_counting(path, num_frames)
    return np.stack([got[i] for i in idx.tolist()]), idx


def _read_video_counting(path: Path, num_frames: int) -> tuple[np.ndarray, np.ndarray]:
    """Like `read_video_file`, but counts the frames by decoding them all (for headers with a wrong count)."""
    import av

    with av.open(str(path)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    if not frames:
        raise OSError(f"{path} has no decodable video frames")
    idx = sample_indices(len(frames), num_frames or len(frames))
    return np.stack([frames[i] for i in idx.tolist()]), idx


class InstructionDataset:
    """LLaVA-Video-178K-format records with their frames.

    `__getitem__` returns an `InstructionExample`, or None when the record's video is
    missing or unreadable (logged). `missing` and `unreadable` count those misses per call
    (an epoch that meets a missing video twice counts two); `skipped_ids` lists each
    skipped record id once, in the order first met. With a multi-worker DataLoader these
    counters live in the workers, so count the Nones in the main process instead.
    """

    def __init__(self, path: str | os.PathLike, video_root: str | os.PathLike, num_frames: int | None = 8):
        if num_frames is not None and num_frames < 1:
            raise ValueError(f"num_frames must be >= 1 (or None for every frame), got {num_frames}")
        self.path = Path(path)
        self.video_root = Path(video_root)
        self.num_frames = None if num_frames is None else int(num_frames)
        self.records = []  # (id, video path, prompt, answer, turns, geometry)
        for k, rec in enumerate(load_records(self.path)):
            rid = str(rec.get("id", f"#{k}"))
            video, prompt, answer, turns = parse_record(rec, f"{self.path}, record {k} (id {rid!r})")
            geometry = rec.get("geometry") if isinstance(rec.get("geometry"), dict) else None
            self.records.append((rid, self.video_root / video, prompt, answer, turns, geometry))
        self.missing = 0
        self.unreadable = 0
        self.skipped_ids: list[str] = []
        logger.info("%d instruction records from %s", len(self.records), self.path)

    def __len__(self) -> int:
        return len(self.records)

    def __repr__(self) -> str:
        return f"InstructionDataset({str(self.path)!r}, {len(self)} records, num_frames={self.num_frames})"

    def _skip(self, rid: str) -> None:
        if rid not in self.skipped_ids:
            self.skipped_ids.append(rid)

    def __getitem__(self, i: int) -> InstructionExample | None:
        rid, video, prompt, answer, turns, geometry = self.records[i]
        if not video.exists():
            self.missing += 1
            self._skip(rid)
            logger.warning("skipping record %r: video %s does not exist (%d missing so far)", rid, video, self.missing)
            return None
        try:
            if video.is_dir():
                frames, idx = read_frame_folder(video, self.num_frames)
            else:
                frames, idx = read_video_file(video, self.num_frames)
        except ImportError:
            raise
        except Exception as e:  # a corrupt file must not stop a long run
            self.unreadable += 1
            self._skip(rid)
            logger.warning("skipping record %r: cannot read %s: %s", rid, video, e)
            return None
        return InstructionExample(frames=frames, prompt=prompt, answer=answer, turns=list(turns), id=rid,
                                  frame_indices=idx, geometry=geometry)
