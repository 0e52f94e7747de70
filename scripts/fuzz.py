"""Fuzz the inputs a user hands us: images, weights, configs and list files, mutated by a seeded generator.

Invariant for every case: no traceback, no hang (over ``--timeout`` seconds, 10 by
default), no process crash; a file that cannot be used is refused with a one-line
reason (:class:`mtcnn_jax.errors.UserError` in the library, ``mtcnn-jax: <path>:
<reason>`` and exit code 1 on the command line) and the other inputs are still
processed.

    python scripts/fuzz.py --cases 5000 --seed 0            # the documented run (docs/reliability.md)
    python scripts/fuzz.py --cases 300 --kinds jpeg,png     # a few kinds only

Seeds are made here (the bundled public-domain portrait, re-encoded as JPEG,
progressive JPEG, PNG, BMP, TIFF and WebP; the shipped weights; a config file; a
WIDER ground-truth file, a CUHK landmark list and a predictions JSON written for
the purpose). Each case applies one to four mutations drawn from
``random.Random((seed, case))``: bit flips, a truncation, a header edit (bytes of the
first 64 overwritten), duplication of a chunk, a run of zeros. Cases run in a worker
process that reports each case before and after it runs, so a crash or a hang is
pinned on its case; the worker is restarted after it. At the end the whole image
corpus also goes through ``mtcnn-jax detect FOLDER`` once, which must report each bad
file in exactly one line and still process the good ones.

Prints a summary (cases, outcomes by kind, slowest case) and exits 1 when an
invariant was broken.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Tuple

REPO = Path(__file__).resolve().parents[1]
IMAGE_KINDS = ("jpeg", "progressive", "png", "bmp", "tiff", "webp")
FILE_KINDS = ("weights", "config", "wider", "landmarks", "predictions")
KINDS = IMAGE_KINDS + FILE_KINDS
EXT = {"jpeg": ".jpg", "progressive": ".jpg", "png": ".png", "bmp": ".bmp", "tiff": ".tif", "webp": ".webp",
       "weights": ".msgpack", "config": ".py", "wider": ".txt", "landmarks": ".txt", "predictions": ".json"}


# ----------------------------------------------------------------------------- seeds and mutations


def seeds() -> Dict[str, bytes]:
    """One valid file per kind."""
    import cv2
    import numpy as np

    bgr = cv2.imread(str(REPO / "mtcnn_jax" / "assets" / "astronaut.jpg"))
    bgr = cv2.resize(bgr, (128, 128), interpolation=cv2.INTER_AREA)
    out = {}
    for kind, ext, params in (("jpeg", ".jpg", [cv2.IMWRITE_JPEG_QUALITY, 90]),
                              ("progressive", ".jpg", [cv2.IMWRITE_JPEG_PROGRESSIVE, 1]),
                              ("png", ".png", []), ("bmp", ".bmp", []), ("tiff", ".tif", []),
                              ("webp", ".webp", [cv2.IMWRITE_WEBP_QUALITY, 90])):
        ok, data = cv2.imencode(ext, bgr, params)
        assert ok, kind
        out[kind] = data.tobytes()
    out["weights"] = (REPO / "mtcnn_jax" / "weights" / "mtcnn_authors.msgpack").read_bytes()
    out["config"] = (
        "from mtcnn_jax import config_utils\n\n\ndef get_config(arg=None):\n"
        "    c = config_utils.base_config()\n    c.stage = 'onet'\n    c.total_steps = 100\n"
        "    c.alpha.landmarks = 1.0\n    c.batch.negative, c.batch.positive = 24, 8\n    return c\n"
    ).encode()
    out["wider"] = (
        "0--Parade/a.jpg\n2\n10 20 30 40 0 0 0 0 0 0\n50 60 25 25 1 0 0 0 1 0\n"
        "1--Handshaking/b.jpg\n0\n0 0 0 0 0 0 0 0 0 0\n2--Demo/c.jpg\n1\n5 5 100 120 0 0 0 0 0 0\n"
    ).encode()
    out["landmarks"] = (
        "lfw_5590\\a.jpg 10 110 20 120 40 50 80 50 60 70 45 95 75 95\n"
        "net_7876\\b.jpg 0 60 0 60 20 25 40 25 30 35 22 48 38 48\n"
    ).encode()
    out["predictions"] = json.dumps([
        {"path": "0--Parade/a.jpg", "width": 640, "height": 480,
         "faces": [{"box": [10, 20, 40, 60], "score": 0.99, "landmarks": [[20, 30], [30, 30], [25, 40], [20, 50], [30, 50]]}]},
        {"path": "1--Handshaking/b.jpg", "width": 640, "height": 480, "faces": []},
    ]).encode()
    return out


def mutate(data: bytes, rng: random.Random) -> Tuple[bytes, List[str]]:
    """One to four mutations of ``data``; returns the bytes and the mutations' names."""
    d = bytearray(data)
    done = []
    for _ in range(rng.randint(1, 4)):
        op = rng.choice(("bitflip", "truncate", "header", "duplicate", "zeros"))
        done.append(op)
        n = len(d)
        if n == 0:
            break
        if op == "bitflip":
            for _ in range(rng.randint(1, 16)):
                i = rng.randrange(n)
                d[i] ^= 1 << rng.randrange(8)
        elif op == "truncate":
            del d[rng.randrange(n):]
        elif op == "header":
            for _ in range(rng.randint(1, 4)):
                d[rng.randrange(min(n, 64))] = rng.randrange(256)
        elif op == "duplicate":
            a = rng.randrange(n)
            b = min(n, a + rng.randint(1, 4096))
            at = rng.randrange(n + 1)
            d[at:at] = d[a:b]
        else:
            a = rng.randrange(n)
            d[a : a + rng.randint(1, 512)] = bytes(min(n - a, 512))
    return bytes(d), done


def make_corpus(folder: Path, cases: int, seed: int, kinds) -> List[dict]:
    """Write ``cases`` mutated files (kinds in turn) into ``folder``; returns their descriptions."""
    base = seeds()
    out = []
    for k in range(cases):
        kind = kinds[k % len(kinds)]
        data, ops = mutate(base[kind], random.Random(f"{seed}/{k}"))
        name = f"{k:05d}_{kind}{EXT[kind]}"
        (folder / name).write_bytes(data)
        out.append({"case": k, "name": name, "kind": kind, "mutations": ops})
    return out


# ----------------------------------------------------------------------------- the worker


def _one(path: Path, kind: str, detector) -> Tuple[str, str]:
    """Run one case: ``("ok" | "refused", reason)``; any other exception propagates (a bug)."""
    from mtcnn_jax import config_utils, images, pretrained
    from mtcnn_jax.data import landmarks, wider
    from mtcnn_jax.errors import UserError
    from mtcnn_jax.evaluation import predictions

    try:
        if kind in IMAGE_KINDS:
            image = images.load_image(path)
            detector.detect(image)
        elif kind == "weights":
            pretrained.load_params(path)
        elif kind == "config":
            config_utils.get(str(path))
        elif kind == "wider":
            wider.read_wider_gt(path)
        elif kind == "landmarks":
            landmarks.read_landmark_list(path, "cuhk")
        elif kind == "predictions":
            predictions.read_predictions(path)
        return "ok", ""
    except (UserError, pretrained.WeightsError) as err:
        text = str(err)
        if "\n" in text or not text:
            raise AssertionError(f"refusal is not one line: {text!r}") from None
        return "refused", text


def worker(folder: Path, names: List[str], log: Path) -> None:
    """Run the cases ``names`` in order, appending one JSON line per event to ``log``."""
    import traceback

    from mtcnn_jax import MTCNN

    detector = MTCNN(compilation_cache=False)
    with open(log, "a", buffering=1) as f:
        for name in names:
            kind = name.split("_", 1)[1].rsplit(".", 1)[0]
            f.write(json.dumps({"start": name}) + "\n")
            t0 = time.perf_counter()
            try:
                outcome, reason = _one(folder / name, kind, detector)
            except Exception as err:  # noqa: BLE001 -- that is what we are looking for
                outcome, reason = "bug", f"{type(err).__name__}: {err} | " + traceback.format_exc(limit=3)[-400:]
            f.write(json.dumps({"name": name, "outcome": outcome, "reason": reason,
                                "seconds": time.perf_counter() - t0}) + "\n")


# ----------------------------------------------------------------------------- the driver


def run_cases(folder: Path, corpus: List[dict], timeout: float) -> List[dict]:
    """Every case through workers; a worker that dies or stalls pins its case and is replaced."""
    log = folder.parent / "fuzz_log.jsonl"
    log.write_text("")
    names = [c["name"] for c in corpus]
    results: Dict[str, dict] = {}
    env = dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS=os.environ.get("JAX_PLATFORMS", "cpu"))
    while len(results) < len(names):
        todo = [n for n in names if n not in results]
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
            json.dump(todo, f)
            todo_file = f.name
        proc = subprocess.Popen([sys.executable, __file__, "--worker", str(folder), todo_file, str(log)], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        started, current = time.time(), None
        while proc.poll() is None:
            time.sleep(0.05)
            events = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
            for e in events:
                if "outcome" in e:
                    results[e["name"]] = e
            last = events[-1] if events else None
            if last is not None and "start" in last and last["start"] not in results:
                if current != last["start"]:
                    current, started = last["start"], time.time()
                elif time.time() - started > timeout:
                    proc.kill()
                    proc.wait()
                    results[current] = {"name": current, "outcome": "hang", "reason": f"over {timeout:g} s",
                                        "seconds": time.time() - started}
                    break
        stderr = proc.stderr.read().decode(errors="replace")
        os.unlink(todo_file)
        for e in (json.loads(line) for line in log.read_text().splitlines() if line.strip()):
            if "outcome" in e:
                results[e["name"]] = e
        events = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
        last = events[-1] if events else None
        if proc.returncode not in (0, None) and last is not None and "start" in last and last["start"] not in results:
            results[last["start"]] = {"name": last["start"], "outcome": "crash",
                                      "reason": f"worker exit {proc.returncode}: {stderr[-300:]}", "seconds": 0.0}
        elif proc.returncode != 0 and len(results) < len(names) and "hang" not in {r["outcome"] for r in results.values()}:
            raise RuntimeError(f"the fuzz worker failed outside any case (exit {proc.returncode}): {stderr[-2000:]}")
    return [dict(c, **results[c["name"]]) for c in corpus]


_LINE = re.compile(r"^mtcnn-jax: (.+?): (.+)$")


def run_cli(folder: Path, corpus: List[dict], timeout: float) -> dict:
    """``mtcnn-jax detect`` over the image cases of the corpus plus two intact images, in one process.

    Returns ``{"exit", "reported", "processed", "problems"}``: problems lists every
    broken invariant (a traceback, a bad file reported in more or less than one line,
    an intact image not processed, an exit code other than 0 / 1).
    """
    images = folder.parent / "cli_images"
    images.mkdir(exist_ok=True)
    base = seeds()
    picked = [c for c in corpus if c["kind"] in IMAGE_KINDS]
    for c in picked:
        os.link(folder / c["name"], images / c["name"])
    (images / "zz_intact.jpg").write_bytes(base["jpeg"])
    (images / "zz_intact.png").write_bytes(base["png"])
    out_json = folder.parent / "cli.json"
    env = dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS=os.environ.get("JAX_PLATFORMS", "cpu"),
               MTCNN_JAX_CACHE_DIR="off")
    proc = subprocess.run([sys.executable, "-m", "mtcnn_jax.cli", "detect", str(images), "--json", str(out_json)],
                          env=env, capture_output=True, text=True, timeout=timeout * (len(picked) + 10))
    problems = []
    if "Traceback" in proc.stderr:
        problems.append("a traceback on stderr: " + proc.stderr[proc.stderr.index("Traceback"):][:500])
    if proc.returncode not in (0, 1):
        problems.append(f"exit code {proc.returncode}")
    reported: Dict[str, int] = {}
    for line in proc.stderr.splitlines():
        m = _LINE.match(line)
        if m is None:
            problems.append(f"not a one-line report: {line[:200]!r}")
            continue
        name = os.path.basename(m.group(1))
        reported[name] = reported.get(name, 0) + 1
    done = {os.path.basename(e["path"]) for e in json.loads(out_json.read_text())} if out_json.exists() else set()
    for name in ("zz_intact.jpg", "zz_intact.png"):
        if name not in done:
            problems.append(f"the intact image {name} was not processed")
    for c in picked:
        n = reported.get(c["name"], 0)
        if c["name"] in done and n:
            problems.append(f"{c['name']}: processed and reported")
        if c["name"] not in done and n != 1:
            problems.append(f"{c['name']}: not processed, reported {n} times")
    if reported and proc.returncode != 1:
        problems.append(f"files were reported but the exit code is {proc.returncode}")
    return {"exit": proc.returncode, "reported": sum(reported.values()), "processed": len(done), "problems": problems}


def summarize(results: List[dict]) -> dict:
    by_kind: Dict[str, Dict[str, int]] = {}
    for r in results:
        by_kind.setdefault(r["kind"], {}).setdefault(r["outcome"], 0)
        by_kind[r["kind"]][r["outcome"]] += 1
    slowest = max(results, key=lambda r: r.get("seconds", 0.0)) if results else None
    broken = [r for r in results if r["outcome"] in ("bug", "crash", "hang")]
    return {"cases": len(results), "by_kind": by_kind, "broken": broken,
            "slowest": None if slowest is None else {k: slowest[k] for k in ("name", "kind", "outcome", "seconds")}}


def fuzz(cases: int, seed: int, kinds=KINDS, timeout: float = 10.0, workdir=None, cli: bool = True) -> dict:
    """Make ``cases`` mutated inputs, run them, and return :func:`summarize`'s dict (plus ``cli``)."""
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        folder = Path(tmp) / "cases"
        folder.mkdir()
        corpus = make_corpus(folder, cases, seed, list(kinds))
        t0 = time.time()
        results = run_cases(folder, corpus, timeout)
        summary = summarize(results)
        summary["seconds"] = time.time() - t0
        if cli and any(k in IMAGE_KINDS for k in kinds):
            summary["cli"] = run_cli(folder, corpus, timeout)
        return summary


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--worker"]:
        worker(Path(argv[1]), json.loads(Path(argv[2]).read_text()), Path(argv[3]))
        return 0
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cases", type=int, default=5000, help="number of mutated inputs (default 5000)")
    p.add_argument("--seed", type=int, default=0, help="seed of the mutations (default 0)")
    p.add_argument("--kinds", default=",".join(KINDS), help=f"comma-separated kinds (default all: {','.join(KINDS)})")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds one case may take (default 10)")
    p.add_argument("--no-cli", action="store_true", help="skip the one-process `mtcnn-jax detect` pass")
    p.add_argument("--json", metavar="OUT", help="also write the summary as JSON")
    args = p.parse_args(argv)
    kinds = [k for k in args.kinds.split(",") if k]
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        p.error(f"unknown kinds {unknown} (known: {', '.join(KINDS)})")
    s = fuzz(args.cases, args.seed, kinds, args.timeout, cli=not args.no_cli)
    print(f"{s['cases']} cases, seed {args.seed}, {s['seconds']:.0f} s")
    print("| kind | " + " | ".join(("ok", "refused", "bug", "crash", "hang")) + " |")
    print("|---|---:|---:|---:|---:|---:|")
    for kind, counts in s["by_kind"].items():
        print(f"| {kind} | " + " | ".join(str(counts.get(o, 0)) for o in ("ok", "refused", "bug", "crash", "hang")) + " |")
    sl = s["slowest"]
    if sl:
        print(f"slowest case: {sl['name']} ({sl['kind']}, {sl['outcome']}) {sl['seconds']:.2f} s")
    if "cli" in s:
        c = s["cli"]
        print(f"mtcnn-jax detect over the image cases: exit {c['exit']}, {c['processed']} images processed, "
              f"{c['reported']} reported, {len(c['problems'])} problems")
        for problem in c["problems"][:20]:
            print("  " + problem)
    for r in s["broken"][:20]:
        print(f"BROKEN {r['name']} ({r['kind']}, {r['mutations']}): {r['outcome']}: {r['reason'][:300]}")
    if args.json:
        Path(args.json).write_text(json.dumps(s, indent=2) + "\n")
    return 1 if s["broken"] or s.get("cli", {}).get("problems") else 0


if __name__ == "__main__":
    sys.exit(main())
