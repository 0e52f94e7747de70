"""``mtcnn-jax detect``: find faces and their five landmarks in images, folders, videos and cameras.

    mtcnn-jax detect PATH... [--json OUT] [--annotate DIR] [--crops DIR]
                     [--keep all|largest|best] [--rotations ANGLES]
                     [--every N] [--smooth] [--min-face N] [--factor F]
                     [--thresholds a,b,c] [--weights FILE_OR_DIR | --model DIR]
                     [--max-megapixels M] [--pyramid summed|original|chained]

Each PATH is an image file, a folder (searched recursively for .jpg, .jpeg,
.png, .bmp, .webp, .tif, .tiff), a video file (.mp4, .m4v, .mov, .avi, .mkv,
.webm, .mpg, .mpeg, .wmv, .flv, .ts; named directly, not searched for in
folders) or a camera index (0, 1, ...: a number that is not a file). For each
image it prints ``<path>: <N> faces``; for each video ``<path>: <F> frames, <N>
faces (<R> frames/s)``; then ``<N> images, <M> faces, <K> errors`` (with ``<V>
videos (<F> frames)`` when videos were given). Videos and cameras are processed
after the images. A file that cannot be used (missing, not an image or video,
truncated, too large, a camera that does not exist, ...) is reported on stderr as
``mtcnn-jax: <path>: <reason>`` and the others are still processed; the exit
code is then 1. Bad options give one line on stderr and exit code 2.

``--json OUT`` writes a list with one entry per image processed::

    {"path": "photos/a.jpg", "width": 640, "height": 480,
     "annotated": "out/a.jpg",
     "faces": [{"box": [x1, y1, x2, y2], "score": 0.9987000226974487,
                "landmarks": [[x, y], ...5: left eye, right eye, nose,
                              left mouth corner, right mouth corner],
                "crop": "crops/a_0.png"}]}

in pixels of the (upright) input image, boxes and landmarks rounded to 2
decimals; scores at full precision (the detector's float32 value, read back
exactly, so that AP computed from the file is that of the detections).
``path`` is the path as given, or folder-as-given/
relative-path for files found in a folder; ``annotated`` (with ``--annotate``)
is the annotated copy made of it, ``crop`` (with ``--crops``) the aligned crop
of that face. The file is valid JSON after every image, so
an interrupted run (Ctrl-C: exit code 130) or a write error keeps every image
finished before it. ``OUT`` ending in ``.jsonl`` gets JSON Lines instead (one
entry per line); ``--json -`` writes to stdout (the per-image lines then go to
stderr).

A video gives one entry per frame processed, as it goes, with ``frame`` (0-based
index in the video) and ``time`` (seconds) after ``path``:
``{"path": "clip.mp4", "frame": 12, "time": 0.48, "width": ..., "height": ...,
"faces": [...]}``; a progress bar shows on a terminal when the video's length is
known. ``--every N`` processes every N-th frame only (frames 0, N, 2N, ...;
``frame`` and ``time`` stay those of the whole video). ``--smooth`` smooths each
face's box and landmarks across frames (a One Euro filter: less jitter on still
faces, little lag on moving ones); off by default. A camera runs until Ctrl-C
(exit code 130, what was done is kept). Frames go through the detector 8 at a
time (a camera's one at a time).

``--annotate DIR`` writes a copy of each image with its detections drawn to
``DIR/<relative name>``: the file name for a file given directly, the path
relative to the folder for files found in a folder; ``..`` and empty parts are
dropped, names taken twice get ``-1``, ``-2``, ... (the JSON's ``annotated``
says which is which) and no file is written outside DIR. A video gets an
annotated video ``DIR/<name>`` (.mp4, .m4v, .mov: MPEG-4; .avi, .mkv: MJPEG;
other containers are written as .mp4; a camera as ``camera<N>.mp4``) holding
the frames processed, at the video's rate divided by ``--every``; an interrupted
run finishes it with the frames done.

``--crops DIR`` writes the aligned 112 × 112 crop of each face (the ArcFace
five-point template, :func:`mtcnn_jax.align`) as ``DIR/<name>_<k>.png``: ``<name>``
the image's relative name without its extension, ``k`` the face's place in the
JSON's list (0 = most confident); a video's go to ``DIR/<name>/<frame>_<k>.png``
(frame number in 6 digits). Each face's ``crop`` in the JSON names its file.
``--crop-size N`` changes the size (a multiple of 112 or 128; insightface's
convention: at 128 the 112 template moved 8 px right).

``--keep largest`` keeps only the face with the largest box of each image or
frame, ``--keep best`` only the most confident one (default ``all``).
``--rotations 0,90,180,270`` also looks for faces in copies of each image
rotated by these angles (degrees counter-clockwise; any angles) and merges the
detections, mapped back to the image, by non-maximum suppression; each face then
has ``angle``, the rotation it was found at, and its landmarks in the face's own
order (crops of rotated faces come out upright). It costs one detection per angle.

Nothing of the user's is replaced unless ``--overwrite`` is given: ``--json``
may not name an existing file, an input file or a file inside an input folder;
``--annotate`` and ``--crops`` may not be an input folder, lie inside one or hold
an input, and an existing file in them is not replaced (that image or video is
reported). With ``--overwrite`` these are allowed, and files under DIR inside an
input folder are not taken as input (they are earlier output). An annotated
copy or a crop never replaces an input image.

``--min-face`` (pixels, default 20) must be at least 6: below 12 px the pyramid
upsamples the image by 12 / min-face, and 6 caps that at 2x (4x the pixels).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import List, NamedTuple, Optional, Set, Tuple

import cv2
from tqdm import tqdm

from mtcnn_jax import images, inputs, video
from mtcnn_jax.commands.options import add_detector_options, make_detector, parse_settings
from mtcnn_jax.errors import ImageError, UserError
from mtcnn_jax.evaluation.predictions import PredictionsWriter, faces_to_json
from mtcnn_jax.outputs import (OutputPolicy, collect_images, crop_names, inside, output_name, printable,
                               write_annotated, write_crops)


def register(subparsers) -> None:
    """Add the ``detect`` sub-command to ``subparsers`` (its ``func`` is :func:`run`)."""
    p = subparsers.add_parser(
        "detect",
        help="detect faces and landmarks in images, folders, videos or a camera",
        description=__doc__.split("\n\n", 2)[2],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("paths", nargs="+", metavar="PATH", help="image files, folders, video files or camera indices")
    p.add_argument("--json", metavar="OUT", help="write the detections to OUT as JSON ('-': stdout)")
    p.add_argument("--annotate", metavar="DIR", help="write annotated copies of the images and videos to DIR")
    p.add_argument("--crops", metavar="DIR", help="write the aligned crop of each face to DIR")
    p.add_argument("--crop-size", metavar="N", default="112",
                   help="side of the crops in pixels, a multiple of 112 or 128 (default 112)")
    p.add_argument("--keep", metavar="WHICH", default="all",
                   help="'all' faces (default), only the 'largest' or only the 'best' (most confident) of each image")
    p.add_argument("--rotations", metavar="ANGLES",
                   help="also search copies rotated by these angles, e.g. 0,90,180,270 (degrees counter-clockwise)")
    p.add_argument("--every", metavar="N", default="1", help="videos: process every N-th frame only (default 1)")
    p.add_argument("--smooth", action="store_true",
                   help="videos: smooth boxes and landmarks across frames (One Euro filter; default off)")
    p.add_argument("--overwrite", action="store_true",
                   help="allow replacing existing output files and writing inside an input folder")
    p.add_argument("--model", metavar="DIR",
                   help="run the cascade exported to DIR by 'mtcnn-jax export' (StableHLO or ONNX, as its "
                        "manifest says) instead of the package's networks")
    add_detector_options(p)
    p.set_defaults(func=run)


class _Options(NamedTuple):
    keep: str
    angles: Optional[Tuple[float, ...]]
    every: int
    crop_size: int


def _parse_options(args: argparse.Namespace) -> _Options:
    """The options beside the detector's; one-line UserError on the first bad one."""
    if args.keep not in inputs.KEEP_MODES:
        raise UserError(f"--keep: expected all, largest or best, got {args.keep!r}")
    angles = None
    if args.rotations is not None:
        from mtcnn_jax.rotations import parse_angles  # noqa: PLC0415

        angles = parse_angles(args.rotations, "--rotations")
    every = _whole("--every", args.every)
    size = _whole("--crop-size", args.crop_size)
    from mtcnn_jax.align import template  # noqa: PLC0415

    try:
        template(size)
    except ValueError:
        raise UserError(f"--crop-size: expected a multiple of 112 or 128 (the ArcFace crops' convention), "
                        f"got {args.crop_size}") from None
    return _Options(args.keep, angles, every, size)


def _whole(option: str, text: str) -> int:
    try:
        value = int(text)
    except (TypeError, ValueError):
        raise UserError(f"{option}: expected a whole number >= 1, got {text!r}") from None
    if value < 1:
        raise UserError(f"{option}: expected a whole number >= 1, got {text!r}")
    return value


def run(args: argparse.Namespace) -> int:
    """Run ``detect``: 0, 1 if a file could not be used, 130 if interrupted. Bad options raise UserError."""
    settings = parse_settings(args)
    opts = _parse_options(args)
    cameras = {p: video.camera_index(p) for p in args.paths if video.camera_index(p) is not None}
    videos = [p for p in args.paths if p not in cameras and video.is_video_name(p) and os.path.isfile(p)]
    image_paths = [p for p in args.paths if p not in cameras and p not in videos]
    policy = OutputPolicy([p for p in args.paths if p not in cameras], args.overwrite)
    if args.json not in (None, "-"):
        policy.check_file("--json", args.json)
    out_dir, crops_dir = args.annotate, args.crops
    if out_dir is not None and crops_dir is not None and os.path.realpath(out_dir) == os.path.realpath(crops_dir):
        raise UserError("--crops: must be another folder than --annotate")
    if out_dir is not None:
        policy.check_folder("--annotate", out_dir)
    if crops_dir is not None:
        policy.check_folder("--crops", crops_dir)
    detector = make_detector(settings, model=args.model)

    lines = sys.stderr if args.json == "-" else sys.stdout
    n_errors = 0

    def report(message: str) -> None:
        nonlocal n_errors
        n_errors += 1
        tqdm.write(f"mtcnn-jax: {printable(message)}", file=sys.stderr)

    errors: List[ImageError] = []
    items = collect_images(image_paths, errors, out_dir) if image_paths else []
    if crops_dir is not None:  # earlier crops inside an input folder (allowed by --overwrite) are not input
        items = [item for item in items if not inside(item.path, crops_dir)]
    for err in errors:
        report(str(err))
    writer = None
    if args.json is not None:
        try:
            writer = PredictionsWriter(args.json, sys.stdout)
        except OSError as err:
            raise UserError(f"--json: cannot write {args.json} ({err.strerror or err})") from None

    stopped = False  # the JSON could not be written: stop

    def emit(entry: dict) -> None:
        nonlocal stopped
        if writer is None:
            return
        try:
            writer.write(entry)
        except BrokenPipeError:
            raise  # the reader of stdout went away: the CLI ends quietly (exit 141)
        except OSError as err:
            report(f"--json: cannot write {args.json} ({err.strerror or err}); stopped, "
                   f"the {writer.count} {'entries' if videos or cameras else 'images'} before are kept")
            stopped = True

    def find(image):
        """The detector on one image, with the rotation search and the selection asked for."""
        if opts.angles is not None:
            from mtcnn_jax.rotations import detect_rotated  # noqa: PLC0415

            return detect_rotated(detector, image, opts.angles, opts.keep)
        return inputs.select(detector.detect(image), opts.keep)

    inputs_real = {os.path.realpath(item.path) for item in items} | {os.path.realpath(p) for p in videos}
    outputs = _Outputs(out_dir, crops_dir, opts.crop_size, inputs_real, args.overwrite, report)
    show_bar = len(items) > 1 or any(os.path.isdir(p) for p in image_paths)
    n_images = n_faces = 0
    totals = {"videos": 0, "frames": 0, "faces": 0}  # updated frame by frame, so an interrupt keeps the count
    interrupted = False
    try:
        for item in tqdm(items, desc="detect", unit="image", file=sys.stderr,
                         disable=None if show_bar else True, leave=False):
            try:
                image = images.load_image(item.path, max_pixels=settings.max_pixels)
            except ImageError as err:
                report(f"{item.display}: {err.reason}")
                continue
            faces = find(image)
            entry = faces_to_json(item.display, image, faces)
            if opts.angles is not None:
                from mtcnn_jax.rotations import add_angles  # noqa: PLC0415

                add_angles(entry, faces)
            outputs.image(item, image, faces, entry)
            emit(entry)
            if stopped:
                break
            n_images += 1
            n_faces += len(entry["faces"])
            count = len(entry["faces"])
            tqdm.write(f"{printable(item.display)}: {count} face{'' if count == 1 else 's'}", file=lines)
        ordered = [p for p in args.paths if p in cameras or p in videos]
        sources = [(cameras[p], f"camera {cameras[p]}", f"camera{cameras[p]}") if p in cameras
                   else (p, p, os.path.basename(p)) for p in ordered]
        for source, display, relative in sources if not stopped else []:
            _video(detector, source, display, relative, opts, settings, args.smooth,
                   outputs, emit, lambda: stopped, report, lines, totals)
            if stopped:
                break
    except KeyboardInterrupt:
        interrupted = True
    finally:
        if writer is not None:
            try:
                writer.close()
            except BrokenPipeError:
                pass
            except OSError as err:
                report(f"--json: cannot write {args.json} ({err.strerror or err})")
    n_videos, n_frames = totals["videos"], totals["frames"]
    n_faces += totals["faces"]
    summary = f"{n_images} image{'' if n_images == 1 else 's'}, "
    if videos or cameras:
        summary += (f"{n_videos} video{'' if n_videos == 1 else 's'} "
                    f"({n_frames} frame{'' if n_frames == 1 else 's'}), ")
    summary += f"{n_faces} face{'' if n_faces == 1 else 's'}, {n_errors} error{'' if n_errors == 1 else 's'}"
    if interrupted:
        summary += (f"; interrupted after {n_images} of {len(items)} images (the results so far are kept)"
                    if not (videos or cameras) else "; interrupted (the results so far are kept)")
    print(summary, file=lines)
    if interrupted:
        return 130
    return 1 if n_errors else 0


class _Outputs:
    """Where annotated copies and crops go (``--annotate``, ``--crops``), by the output policy."""

    def __init__(self, out_dir, crops_dir, crop_size, inputs_real, overwrite, report):
        self.out_dir, self.crops_dir, self.crop_size = out_dir, crops_dir, crop_size
        self.inputs, self.overwrite, self.report = inputs_real, overwrite, report
        self.used: Set[str] = set()  # names taken in out_dir
        self.used_crops: Set[str] = set()  # stems taken in crops_dir

    def image(self, item, image, faces, entry) -> None:
        """The annotated copy and the crops of one image; their paths go into ``entry``."""
        if self.out_dir is not None:
            _annotate(self.out_dir, item, image, faces, entry, self.used, self.inputs, self.overwrite, self.report)
        if self.crops_dir is not None and entry["faces"]:
            stem = output_name(item.relative, self.used_crops, extension="")
            self.crops(item.display, stem, image, faces, entry)

    def crops(self, display, stem, image, faces, entry) -> bool:
        """Write the crops of ``faces`` as ``<stem>_<k>.png``; False (reported) when they cannot be written."""
        names = crop_names(stem, len(entry["faces"]))
        targets = [os.path.join(self.crops_dir, n) for n in names]
        hit = next((t for t in targets if os.path.realpath(t) in self.inputs), None)
        if hit is not None:
            self.report(f"{display}: not cropped: {hit} is an input image")
            return False
        try:
            paths = write_crops(self.crops_dir, stem, image, faces, self.crop_size, self.overwrite)
        except FileExistsError as err:
            self.report(f"{display}: not cropped: {err}")
            return False
        except (OSError, cv2.error, ValueError) as err:
            self.report(f"{display}: cannot write the crops ({getattr(err, 'strerror', None) or err})")
            return False
        for face, path in zip(entry["faces"], paths):
            face["crop"] = path
        return True

    def video_writer(self, display, relative, source) -> Optional[Tuple["video.VideoWriter", str]]:
        """The annotated video of ``source`` under ``out_dir``, or None (reported) when it cannot be written."""
        name = output_name(relative, self.used, extension=video.output_extension(relative))
        target = os.path.join(self.out_dir, name)
        if os.path.realpath(target) in self.inputs:
            self.report(f"{display}: not annotated: {target} is an input")
            return None
        if not self.overwrite and os.path.lexists(target):
            self.report(f"{display}: not annotated: {target} exists (pass --overwrite to replace it)")
            return None
        try:
            os.makedirs(os.path.dirname(target), exist_ok=True)
            if not inside(os.path.dirname(target), self.out_dir):
                raise OSError(f"{target} would be outside {self.out_dir} (symbolic link?)")
            fps = (source.fps or 30.0) / source.every
            return video.VideoWriter(target, fps, (source.width, source.height)), target
        except OSError as err:
            self.report(f"{display}: cannot write the annotated video ({err.strerror or err})")
            return None


def _video(detector, source, display, relative, opts, settings, smooth, outputs, emit, stopped, report, lines,
           totals) -> None:
    """Detect in every (``--every``-th) frame of a video or camera, counting into ``totals``
    (``videos``, ``frames``, ``faces``); a source that cannot be opened is reported."""
    from mtcnn_jax.draw import annotate  # noqa: PLC0415

    try:
        src = video.VideoSource(source, every=opts.every, max_pixels=settings.max_pixels, name=display)
    except ImageError as err:
        report(str(err))
        return
    totals["videos"] += 1
    annotated = outputs.video_writer(display, relative, src) if outputs.out_dir is not None else None
    crop_stem = output_name(relative, outputs.used_crops, extension="") if outputs.crops_dir is not None else None
    smoother = video.LandmarkSmoother() if smooth else None
    n_frames = n_faces = 0
    start = time.perf_counter()
    bar = tqdm(total=src.expected, desc=os.path.basename(display) or display, unit="frame", file=sys.stderr,
               disable=None if src.expected else True, leave=False)
    try:
        batch = 1 if src.is_camera else video.BATCH
        for frame, faces in video.detect_frames(detector, src, batch, opts.keep, opts.angles):
            if smoother is not None:
                faces = smoother(frame.time, faces)
            entry = video.frame_entry(display, frame, faces)
            if annotated is not None:
                try:
                    annotated[0].write(annotate(frame.image, faces[0], faces[1], faces[2]))
                    entry["annotated"] = annotated[1]
                except (OSError, cv2.error) as err:
                    report(f"{display}: cannot write the annotated video ({err}); stopped annotating")
                    annotated[0].discard()
                    annotated = None
            if crop_stem is not None and entry["faces"]:
                stem = output_name(f"{crop_stem}/{frame.index:06d}", outputs.used_crops, extension="")
                if not outputs.crops(display, stem, frame.image, faces, entry):
                    crop_stem = None  # reported once; no more crops for this video
            emit(entry)
            if stopped():
                break
            n_frames += 1
            n_faces += len(entry["faces"])
            totals["frames"] += 1
            totals["faces"] += len(entry["faces"])
            bar.update(1)
    except ImageError as err:
        report(str(err))
    finally:
        bar.close()
        src.close()
        if annotated is not None and n_frames == 0:
            annotated[0].discard()  # no frame: no empty video
        elif annotated is not None:
            try:
                annotated[0].close()  # also when interrupted: the video holds the frames done
            except OSError as err:
                report(f"{display}: cannot write the annotated video ({err.strerror or err})")
        rate = n_frames / max(time.perf_counter() - start, 1e-9)
        tqdm.write(f"{printable(display)}: {n_frames} frame{'' if n_frames == 1 else 's'}, {n_faces} "
                   f"face{'' if n_faces == 1 else 's'} ({rate:.1f} frames/s)", file=lines)


def _annotate(out_dir, item, image, faces, entry, used, inputs, overwrite, report) -> None:
    """Write the annotated copy of ``item`` under ``out_dir``; record its path as ``entry["annotated"]``."""
    name = output_name(item.relative, used)
    target = os.path.join(out_dir, name)
    if os.path.realpath(target) in inputs:
        report(f"{item.display}: not annotated: {target} is an input image")
        return
    if not overwrite and os.path.lexists(target):
        report(f"{item.display}: not annotated: {target} exists (pass --overwrite to replace it)")
        return
    try:
        write_annotated(out_dir, name, image, faces)
    except (OSError, cv2.error) as err:
        report(f"{item.display}: cannot write the annotated image ({getattr(err, 'strerror', None) or err})")
        return
    entry["annotated"] = target
