"""``streamyolo detect``: TrainYourOwnYOLO's ``3_Inference/Detector.py`` on the stack, many files at once.

It takes Detector.py's flags with its defaults (paths relative to the TrainYourOwnYOLO folder: the working folder, or
its parent when run from ``3_Inference``) and writes what Detector.py writes: ``Detection_Results.csv`` (its columns
and values: one row per box, corners rounded and clamped as TYOY's ``detect_image`` does, the class index as
``label``) and, unless ``--no_save_img``, the images and videos with their boxes drawn, named with the postfix.
Unlike Detector.py, video frames get rows too (``image`` reads ``clip.mp4#frame=17``), and everything runs as
recordings through the real pipeline: ingest reads every image shard and video in parallel (lossless PNG frames, so
the detector sees exactly the pixels TYOY would), the detector replicas batch across them on every configured GPU,
and a JSONL sink stores each result durably; the files are written from those results once all are in.

The exit status is 0 when every image and every video frame was answered; otherwise 1, naming each file that could
not be read (the others still finish); 2 for bad arguments or config.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import shutil
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import yaml
from PIL import Image

from common.config import ConfigError, StackConfig, load_config
from common.redis_io import remove_prefix
from common.service import EXIT_CONFIG
from common.stack.launcher import OnUrl, run_stack
from detector.compat import Row, class_colours, draw_rows, tyoy_rows
from detector.engines import missing_extra

log = logging.getLogger("streamyolo.detect")

IMAGE_ENDINGS = (".jpg", ".jpeg", ".png")
VIDEO_ENDINGS = (".mp4", ".mpeg", ".mpg", ".avi")
DEFAULT_TYPES = [".jpg", ".jpeg", ".png", ".mp4"]  # TYOY's GetFileList default: .avi only when asked for
COLUMNS = ["image", "image_path", "xmin", "ymin", "xmax", "ymax", "label", "confidence", "x_size", "y_size"]
PREFIX = "detect"


def tyoy_folder(cwd: Path) -> Path:
    """Where Detector.py's default paths start: the TrainYourOwnYOLO folder (it holds ``Data``)."""
    return next((d for d in (cwd, cwd.parent) if (d / "Data").is_dir()), cwd)


def parser(base: Path) -> argparse.ArgumentParser:
    results = base / "Data" / "Source_Images" / "Test_Image_Detection_Results"
    weights = base / "Data" / "Model_Weights"
    p = argparse.ArgumentParser(
        prog="streamyolo detect",
        description="TrainYourOwnYOLO's Detector.py on the stack: every image and video under --input_path, "
        "through the detectors in parallel; Detection_Results.csv and annotated copies.",
    )
    p.add_argument(
        "--input_path",
        type=Path,
        default=base / "Data" / "Source_Images" / "Test_Images",
        help="folder of images and videos (subfolders included), or one file (default: %(default)s)",
    )
    p.add_argument("--output", type=Path, default=results, help="folder for the annotated files (default: %(default)s)")
    p.add_argument("--no_save_img", action="store_true", help="write only the CSV, no annotated images or videos")
    p.add_argument(
        "--file_types",
        "--names-list",
        nargs="*",
        default=[],
        help="file endings to include (default: .jpg .jpeg .png .mp4; case does not matter)",
    )
    p.add_argument(
        "--yolo_model",
        type=Path,
        dest="model_path",
        help=f"weights (default: {weights / 'trained_weights_final.h5'}, or the --config pool's model)",
    )
    p.add_argument(
        "--anchors",
        type=Path,
        dest="anchors_path",
        help="anchors file (default: TYOY's keras_yolo3/model_data/yolo_anchors.txt, yolo-tiny_anchors.txt "
        "with --is_tiny; keras-yolo3's own anchors where TYOY's folder is not there)",
    )
    p.add_argument(
        "--classes", type=Path, dest="classes_path", help=f"classes file (default: {weights / 'data_classes.txt'})"
    )
    p.add_argument(
        "--confidence",
        type=float,
        dest="score",
        default=0.25,
        help="keep boxes scoring at least this (default: %(default)s)",
    )
    p.add_argument("--box_file", type=Path, dest="box", help="the CSV (default: OUTPUT/Detection_Results.csv)")
    p.add_argument("--postfix", default="_catface", help="added to annotated files' names (default: %(default)s)")
    p.add_argument("--is_tiny", action="store_true", help="tiny YOLOv3 (its default anchors file)")
    p.add_argument(
        "--gpu_num",
        type=int,
        default=None,
        metavar="N",
        help="spread the detector replicas over the first N GPUs (default: the engine's GPU)",
    )
    p.add_argument("--config", type=Path,
                   help="a stack config: its detector pool (engine, GPUs, replicas, batch) and redis settings are "
                   "used; its cameras and sinks are not")  # fmt: skip
    p.add_argument("--pool", help="which of the config's detector pools (default: the only one)")
    p.add_argument(
        "--engine",
        choices=["auto", "torch", "tensorflow"],
        default="auto",
        help="without --config: the engine (auto: torch when installed, else TensorFlow)",
    )
    p.add_argument("--replicas", type=int, default=None, help="detector processes (default: 1, or the config's)")
    p.add_argument("--input_size", type=int, default=None, help="network input side (default: 416, as Detector.py)")
    p.add_argument("--redis-url", help="use this Redis instead of an embedded one (keys are removed afterwards)")
    p.add_argument(
        "--drain",
        type=float,
        default=120.0,
        metavar="S",
        help="give up when no frame has been answered for S seconds (default: %(default)s)",
    )
    return p  # fmt: skip


@dataclass
class Inputs:
    images: list[Path] = field(default_factory=list)
    videos: list[Path] = field(default_factory=list)


def find_inputs(path: Path, file_types: Sequence[str]) -> Inputs:
    """The images and videos under ``path`` (or ``path`` itself), in name order, with the endings asked for."""
    endings = tuple(e.lower() if e.startswith(".") else f".{e.lower()}" for e in (file_types or DEFAULT_TYPES))
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    wanted = [f for f in files if f.name.lower().endswith(endings)]
    return Inputs(
        images=[f for f in wanted if f.name.lower().endswith(IMAGE_ENDINGS)],
        videos=[f for f in wanted if f.name.lower().endswith(VIDEO_ENDINGS)],
    )


def unreadable_video(path: Path) -> str | None:
    """Why FFmpeg cannot read a video, or None."""
    cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
    try:
        if not cap.isOpened():
            return "FFmpeg cannot open it (not a video, or a codec it lacks)"
        if not cap.grab():
            return "it opens but holds no frame FFmpeg can decode"
        return None
    finally:
        cap.release()


# ---------------------------------------------------------------------------------------------------- the stack
def model_section(args: argparse.Namespace, base: Path, configured: dict[str, Any] | None) -> dict[str, Any]:
    """The pool's model: the flags given, else the config's model, else Detector.py's default files."""
    given = {k: getattr(args, f) for k, f in (("weights", "model_path"), ("anchors", "anchors_path"),
                                              ("classes", "classes_path")) if getattr(args, f) is not None}  # fmt: skip
    if configured is not None and not given:
        model = dict(configured)
    else:
        weights = base / "Data" / "Model_Weights"
        model = {"weights": weights / "trained_weights_final.h5", "classes": weights / "data_classes.txt"}
        anchors = base / "2_Training" / "src" / "keras_yolo3" / "model_data"
        anchors /= "yolo-tiny_anchors.txt" if args.is_tiny else "yolo_anchors.txt"
        if anchors.is_file():
            model["anchors"] = anchors
        elif args.is_tiny:
            model["architecture"] = "tiny"
        model.update(given)
    if args.input_size is not None:
        model["input_size"] = args.input_size
    return {k: str(v) if isinstance(v, Path) else v for k, v in model.items()}


def pool_section(args: argparse.Namespace, base: Path, user: StackConfig | None) -> dict[str, Any]:
    if user is not None and user.detector.pools:
        names = [p.name for p in user.detector.pools]
        name = args.pool or (names[0] if len(names) == 1 else None)
        if name is None or name not in names:
            raise ConfigError([f"{args.config}: detector.pools: pick one with --pool ({', '.join(names)})"])
        # As validated: paths resolved against the config's folder, environment overrides applied.
        pool = user.pool(name).model_dump(mode="json", exclude_unset=True)
    else:
        # Frames are whole lossless images, decoded and letterboxed on the host: threads for it, fuller batches.
        threads = max(2, min(16, (os.cpu_count() or 2) // 2))
        engine: dict[str, Any] = {"kind": engine_kind(args.engine)}
        if engine["kind"] == "torch":
            engine["decode"] = "cpu"  # TYOY's exact letterbox (PIL's bicubic), not the GPU's resize
            engine["compile"] = False  # a run of files: compiling would take longer than it saves
        pool = {"name": "main", "engine": engine, "max_batch": 16, "decode_threads": threads}
    pool["model"] = model_section(args, base, pool.get("model"))
    pool["score_threshold"] = args.score
    pool["clip_boxes"] = False  # TYOY rounds and clamps unclipped boxes itself (and drops those below the image)
    if args.replicas is not None:
        pool["replicas"] = args.replicas
    if args.gpu_num is not None:
        pool["gpus"] = list(range(args.gpu_num))
    pool["streams"] = ["*"]
    return pool


def engine_kind(asked: str) -> str:
    if asked != "auto":
        return asked
    return "torch" if missing_extra("torch") is None else "tensorflow"


def stack_config(args: argparse.Namespace, base: Path, inputs: Inputs, work: Path) -> dict[str, Any]:
    """The stack a run is: a camera per image shard and per video, the pool, and a JSONL sink in ``work``."""
    user = load_config(args.config) if args.config is not None else None
    pool = pool_section(args, base, user)
    batch, replicas = int(pool.get("max_batch", 8)), int(pool.get("replicas", 1))
    lag = max(4, batch)  # frames are lossless and large: keep few in Redis, enough to fill a batch per stream
    redis = user.redis.model_dump(mode="json", exclude_unset=True) if user is not None else {}
    if args.redis_url:
        redis["url"] = args.redis_url
    redis.setdefault("embedded", {}).update({"socket_dir": str(work), "maxmemory_mb": 8192})
    shards = min(len(inputs.images), max(1, (os.cpu_count() or 2) // 2), 16)
    cameras: list[dict[str, Any]] = []
    for i in range(shards):
        listing = work / f"images-{i}.txt"
        listing.write_text("".join(f"{p.resolve()}\n" for p in inputs.images[i::shards]), encoding="utf-8")
        cameras.append({"name": f"images{i}", "source": {"kind": "images", "path": str(listing)}})
    for i, video in enumerate(inputs.videos):
        cameras.append({"name": f"video{i}", "source": {"kind": "file", "path": str(video.resolve())}})
    for camera in cameras:
        camera.update(max_side=8192, encoding="png", decoder_threads=2)
    prefix = PREFIX if redis.get("url") is None else f"{PREFIX}-{uuid.uuid4().hex[:8]}"
    return {
        "redis": redis,
        "streams": {"prefix": prefix, "frames_maxlen": max(10, 2 * lag + batch * replicas), "results_maxlen": 100_000},
        "ingest": {"cameras": cameras, "max_lag": lag},
        "detector": {"pools": [pool]},
        "sinks": [{"kind": "jsonl", "name": "results", "path": str(work / "results.jsonl")}],
    }


def forget(config: StackConfig) -> OnUrl:
    """After a run on the user's own server: remove every key the run made there."""

    def remove(url: str) -> None:
        prefix = config.streams.prefix
        why = remove_prefix(url, prefix, config.redis)
        if why is not None:
            log.warning("the run's keys could not be removed (%s): remove %s:* from the server yourself", why, prefix)

    return remove


# ---------------------------------------------------------------------------------------------------- the files
@dataclass(frozen=True)
class Answer:
    """One frame's result, as TYOY's rows."""

    file: Path
    frame_index: int | None
    width: int
    height: int
    rows: list[Row]


def answers(jsonl: Path) -> Iterator[Answer]:
    if not jsonl.exists():
        return
    with jsonl.open(encoding="utf-8") as lines:
        for line in lines:
            r = json.loads(line)
            if r.get("file") is None:
                continue
            dets = r["detections"]
            rows = tyoy_rows([d["box"] for d in dets], [d["class_id"] for d in dets], [d["score"] for d in dets],
                             r["width"], r["height"])  # fmt: skip
            yield Answer(Path(r["file"]), r.get("frame_index"), r["width"], r["height"], rows)


def annotated_name(output: Path, root: Path, file: Path, postfix: str, ext: str | None = None) -> Path:
    """``output/<subfolder under the input>/<stem><postfix><ext>`` (TYOY's naming; subfolders keep names apart)."""
    relative = file.parent.relative_to(root) if root.is_dir() and file.is_relative_to(root) else Path()
    return output / relative / f"{file.stem}{postfix}{ext or file.suffix}"


def write_outputs(args: argparse.Namespace, inputs: Inputs, found: Iterable[Answer], classes: list[str]) -> list[str]:
    """The CSV and the annotated files; returns one line per file that was not wholly answered."""
    by_image: dict[Path, Answer] = {}
    by_video: dict[Path, dict[int, Answer]] = defaultdict(dict)
    for a in found:
        if a.frame_index is None:
            by_image[a.file] = a
        else:
            by_video[a.file][a.frame_index] = a
    box = args.box or args.output / "Detection_Results.csv"
    box.parent.mkdir(parents=True, exist_ok=True)
    problems: list[str] = []
    colours = class_colours(len(classes))
    save = not args.no_save_img
    with box.open("w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        writer.writerow(COLUMNS)
        for image in inputs.images:
            answer = by_image.get(image.resolve())
            if answer is None:
                problems.append(f"{image}: not answered: {_why_image(image)}")
                continue
            writer.writerows([image.name, str(image), *row, answer.width, answer.height] for row in answer.rows)
            target = annotated_name(args.output, args.input_path, image, args.postfix)
            try:
                if save:
                    _annotate_image(image, answer, target, classes, colours)
            except OSError as exc:  # answered, and its rows written: only the drawn copy is missing
                problems.append(f"{image}: the annotated copy {target} could not be written: {exc}")
        for video in inputs.videos:
            frames = by_video.get(video.resolve(), {})
            for index in sorted(frames):
                a = frames[index]
                name = f"{video.name}#frame={index}"
                writer.writerows([name, str(video), *row, a.width, a.height] for row in a.rows)
            target = annotated_name(args.output, args.input_path, video, args.postfix, _video_ext(video))
            missing = _annotate_video(video, frames, target if save else None, classes, colours)
            if missing:
                problems.append(f"{video}: {missing}")
    return problems


def _why_image(image: Path) -> str:
    if not image.exists():
        return "the file is gone"
    return "not a readable image (OpenCV cannot decode it)" if cv2.imread(str(image)) is None else "see the log"


def _annotate_image(image: Path, answer: Answer, target: Path, classes: list[str], colours: list[Any]) -> None:
    with Image.open(image) as opened:
        canvas = np.array(opened.convert("RGB"))
    draw_rows(canvas, answer.rows, classes, colours)
    target.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(canvas).save(target)


def _video_ext(video: Path) -> str:
    return ".avi" if video.suffix.lower() == ".avi" else ".mp4"


def _annotate_video(
    video: Path, frames: dict[int, Answer], target: Path | None, classes: list[str], colours: list[Any]
) -> str:
    """Read the video again, drawing each frame's boxes into ``target``; returns what went unanswered, or ''."""
    cap = cv2.VideoCapture(str(video), cv2.CAP_FFMPEG)
    if not cap.isOpened():
        return "FFmpeg cannot open it (not a video, or a codec it lacks)"
    fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
    writer = None
    index = -1
    unanswered = 0
    try:
        while True:
            ok, bgr = cap.read()
            if not ok:
                break
            index += 1
            answer = frames.get(index)
            unanswered += answer is None
            if target is None:
                continue
            if writer is None:
                target.parent.mkdir(parents=True, exist_ok=True)
                fourcc = cv2.VideoWriter.fourcc(*("MJPG" if target.suffix == ".avi" else "mp4v"))
                writer = cv2.VideoWriter(str(target), fourcc, fps, (bgr.shape[1], bgr.shape[0]))
            if answer is not None:
                rgb = np.ascontiguousarray(bgr[:, :, ::-1])
                draw_rows(rgb, answer.rows, classes, colours)
                bgr = np.ascontiguousarray(rgb[:, :, ::-1])
            writer.write(bgr)
    finally:
        cap.release()
        if writer is not None:
            writer.release()
    if index < 0:
        return "it holds no frame FFmpeg can decode"
    return f"{unanswered} of its {index + 1} frames not answered" if unanswered else ""


# ---------------------------------------------------------------------------------------------------- the command
def main(argv: Sequence[str] | None = None) -> int:
    """``streamyolo detect``: registered as a command in pyproject.toml."""
    base = tyoy_folder(Path.cwd())
    args = parser(base).parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s streamyolo %(levelname)s: %(message)s")
    if not args.input_path.exists():
        print(f"error: --input_path {args.input_path} does not exist", file=sys.stderr)
        return EXIT_CONFIG
    inputs = find_inputs(args.input_path, args.file_types)
    problems: list[str] = []
    for video in list(inputs.videos):
        why = unreadable_video(video)
        if why is not None:
            problems.append(f"{video}: {why}")
            inputs.videos.remove(video)
    log.info("found %d images and %d videos under %s", len(inputs.images), len(inputs.videos), args.input_path)
    work = Path(tempfile.mkdtemp(prefix="streamyolo-detect-"))
    try:
        code = _run(args, base, inputs, work, problems)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    for line in problems:
        print(f"error: {line}", file=sys.stderr)
    return code or (1 if problems else 0)


def _run(args: argparse.Namespace, base: Path, inputs: Inputs, work: Path, problems: list[str]) -> int:
    try:
        stack = stack_config(args, base, inputs, work)
        path = work / "stack.yaml"
        path.write_text(yaml.safe_dump(stack, sort_keys=False), encoding="utf-8")
        config: StackConfig = load_config(path)
        from detector.model import ModelSpec  # reads the model files: refuse a bad model before starting anything

        pool = config.detector.pools[0]
        missing = missing_extra(pool.engine.kind)
        if missing:
            raise ValueError(missing)
        classes = list(ModelSpec.from_config(pool.model).classes)
    except (ConfigError, ValueError) as exc:
        for line in exc.problems if isinstance(exc, ConfigError) else [str(exc)]:
            print(f"config error: {line}", file=sys.stderr)
        return EXIT_CONFIG
    code = 0
    started = time.monotonic()
    if inputs.images or inputs.videos:
        code = run_stack(config, path, drain=args.drain, on_url=forget(config) if config.redis.url else None)
    found = list(answers(work / "results.jsonl"))
    seconds = time.monotonic() - started
    log.info("answered %d frames (%d images, %d video frames) in %.1f s: %.1f frames/s", len(found),
             sum(a.frame_index is None for a in found), sum(a.frame_index is not None for a in found), seconds,
             len(found) / max(seconds, 1e-9))  # fmt: skip
    problems.extend(write_outputs(args, inputs, found, classes))
    box = args.box or args.output / "Detection_Results.csv"
    log.info("wrote %s%s", box, "" if args.no_save_img else f" and the annotated files in {args.output}")
    return code
