"""Data pipeline throughput: samples/s per DataLoader worker, with the per-stage split.

Measures one worker's work for a Scene Flow-format 960×540 pair (2 PNG + 1 PFM) -> a 256×512
training crop: image decode, PFM decode, crop + colour augmentation + normalisation, and the whole
``SceneFlowDataset.__getitem__``. Runs on the real FlyingThings3D sample in ../shared/data/real
(if present) and on a synthetic 960×540 tree generated in a temporary folder, and compares, in the
same run, with a PSMNet-style loader (PIL decode, PIL crop, float normalisation) when Pillow is
installed. Also reports the synthetic generator's pairs/s. One thread, as in a DataLoader worker, so
the CPU time per sample (``time.process_time``) gives the throughput of one worker on a core of its
own, independent of the machine's other load (wall-clock medians are reported too); ``--gpu-rates``
turns it into the number of workers that keep a GPU consuming that many samples/s busy
(ceil(rate / samples per worker), one free core per worker). ``--markdown`` prints the result table for docs/training.md, with machine and date.

    python scripts/bench_data.py --repeats 30 --out bench_data.json --gpu-rates 50 100 200
    python scripts/bench_data.py --markdown bench_data.json     # table from a saved result
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import torch

from stereo.data.io import read_disparity, read_image
from stereo.data.normalize import IMAGENET_MEAN, IMAGENET_STD
from stereo.data.real_samples import default_real_data_dir
from stereo.data.sceneflow import SceneFlowDataset
from stereo.evaluation.reports import machine_info, markdown_table
from stereo.data.synthetic import generate, render_pair, sample_rng
from stereo.data.transforms import TrainTransform

CROP = (256, 512)


def timed(function: Callable[[], object], repeats: int, clock: Callable[[], float] = time.perf_counter) -> float:
    """Median seconds per call (after one warm-up call). ``clock=time.process_time`` measures the CPU
    time of this single-threaded process: what one worker costs on a core of its own, whatever else
    the machine is running."""
    function()
    times = []
    for _ in range(repeats):
        start = clock()
        function()
        times.append(clock() - start)
    return statistics.median(times)


def psmnet_style_sample(left: str, right: str, disparity: str, rng: np.random.Generator) -> dict:
    """The reference loader's approach: PIL decode of full images, PIL crop, float normalisation."""
    from PIL import Image

    left_image, right_image = Image.open(left).convert("RGB"), Image.open(right).convert("RGB")
    with open(disparity, "rb") as file:  # header, then float32 rows bottom-to-top
        file.readline()
        width, height = map(int, file.readline().split())
        scale = float(file.readline())
        data = np.fromfile(file, "<f4" if scale < 0 else ">f4").reshape(height, width)
    gt = np.ascontiguousarray(np.flipud(data))
    w, h = left_image.size
    y0, x0 = int(rng.integers(h - CROP[0] + 1)), int(rng.integers(w - CROP[1] + 1))
    box = (x0, y0, x0 + CROP[1], y0 + CROP[0])
    mean, std = np.asarray(IMAGENET_MEAN, np.float32), np.asarray(IMAGENET_STD, np.float32)

    def to_tensor(image):
        array = (np.asarray(image, np.float32) / 255.0 - mean) / std
        return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))

    return {"left": to_tensor(left_image.crop(box)), "right": to_tensor(right_image.crop(box)),
            "disparity": torch.from_numpy(gt[y0:y0 + CROP[0], x0:x0 + CROP[1]].copy())}


def staged_sample(left: str, right: str, disparity: str, transform: TrainTransform) -> tuple[float, float, float]:
    """One sample the way the dataset loads it, timing each stage in the same call (CPU seconds)."""
    start = time.process_time()
    sample = {"left": read_image(left), "right": read_image(right), "name": "bench"}
    decoded = time.process_time()
    sample["disparity"], sample["valid"] = read_disparity(disparity)
    pfm = time.process_time()
    transform(sample)
    return decoded - start, pfm - decoded, time.process_time() - pfm


def bench_tree(label: str, root: Path, repeats: int, has_pillow: bool) -> dict:
    dataset = SceneFlowDataset(root, split="test", files="all", subsets=["flyingthings3d"],
                               transform=TrainTransform(CROP, color=True, rng=np.random.default_rng(0)))
    record = dataset.records[0]
    transform = TrainTransform(CROP, color=True, rng=np.random.default_rng(1))
    plain = TrainTransform(CROP, color=False, rng=np.random.default_rng(2))
    stages = [staged_sample(record.left, record.right, record.disparity, transform) for _ in range(repeats + 1)][1:]
    plain_stages = [staged_sample(record.left, record.right, record.disparity, plain) for _ in range(repeats + 1)][1:]
    image_ms, pfm_ms, transform_ms = (1e3 * statistics.median(column) for column in zip(*stages))
    # Per call, so that the machine's load changes between calls cancel out of the ratio.
    beyond = statistics.median(t / (i + p + t) for i, p, t in stages)
    result = {
        "dataset": label,
        "image_size": "x".join(map(str, read_image(record.left).shape[1::-1])),
        "image_decode_ms": image_ms,
        "pfm_decode_ms": pfm_ms,
        "crop_colour_normalise_ms": transform_ms,
        "crop_normalise_ms": 1e3 * statistics.median(t for _, _, t in plain_stages),
        "beyond_decode_fraction": beyond,
        "sample_ms": 1e3 * timed(lambda: dataset[0], repeats),
        "sample_cpu_ms": 1e3 * timed(lambda: dataset[0], repeats, time.process_time),
    }
    result["samples_per_s"] = 1e3 / result["sample_ms"]
    result["samples_per_s_per_core"] = 1e3 / result["sample_cpu_ms"]
    if has_pillow:
        rng = np.random.default_rng(3)
        result["psmnet_style_sample_ms"] = 1e3 * timed(
            lambda: psmnet_style_sample(record.left, record.right, record.disparity, rng), repeats)
        result["psmnet_style_samples_per_s"] = 1e3 / result["psmnet_style_sample_ms"]
        result["speedup_vs_psmnet_style"] = result["psmnet_style_sample_ms"] / result["sample_ms"]
    return result


def bench_generator(height: int, width: int, max_disp: float, count: int) -> dict:
    start = time.perf_counter()
    for index in range(count):
        render_pair(sample_rng(0, "train", index), height, width, max_disp)
    seconds = (time.perf_counter() - start) / count
    return {"size": f"{width}x{height}", "max_disp": max_disp, "render_ms": 1e3 * seconds, "pairs_per_s": 1.0 / seconds}


def workers_needed(samples_per_s_per_worker: float, rates: list[float]) -> dict[str, int]:
    """Workers (one core each) that supply ``rate`` samples/s: ceil(rate / per-worker rate)."""
    return {f"{rate:g}": math.ceil(rate / samples_per_s_per_worker) for rate in rates}


def markdown(record: dict) -> str:
    """The measured table as Markdown, headed by the command, date and machine it ran on."""
    machine = record["machine"]
    rates = record.get("gpu_rates", [])
    lines = [f"Measured {record.get('date', 'n/a')} with `{record['command']}` on {machine['processor']}, "
             f"{machine['cpu_count']} cores (load average {machine['load_average']:.1f}), one thread per worker, "
             f"OpenCV {machine['opencv']}, torch {machine['torch']}; 960×540 pair (2 PNG + PFM) -> "
             f"{record['crop'][0]}×{record['crop'][1]} crop, median of the timed calls.", ""]
    header = ["data", "2×PNG decode CPU ms", "PFM CPU ms", "crop+colour+normalise CPU ms", "sample ms (wall)",
              "sample CPU ms", "samples/s per worker (own core)"]
    header += [f"workers for {rate:g} samples/s" for rate in rates]
    rows = [[row["dataset"], f"{row['image_decode_ms']:.1f}", f"{row['pfm_decode_ms']:.1f}",
             f"{row['crop_colour_normalise_ms']:.1f}", f"{row['sample_ms']:.1f}", f"{row['sample_cpu_ms']:.1f}",
             f"{row['samples_per_s_per_core']:.1f}", *(row["workers_needed"][f"{rate:g}"] for rate in rates)]
            for row in record["loading"]]
    return "\n".join([*lines, markdown_table(header, rows).rstrip("\n")])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=30, help="timed calls per stage (median reported)")
    parser.add_argument("--generator-pairs", type=int, default=10, help="pairs rendered per generator size")
    parser.add_argument("--out", type=Path, default=Path("bench_data.json"))
    parser.add_argument("--gpu-rates", type=float, nargs="*", default=[50.0, 100.0, 200.0],
                        help="samples/s a GPU consumes (e.g. from scripts/bench_gpu.py): workers needed for each")
    parser.add_argument("--markdown", type=Path, default=None, metavar="JSON",
                        help="print the Markdown table of a saved result and exit")
    args = parser.parse_args()
    if args.markdown is not None:
        print(markdown(json.loads(args.markdown.read_text())))
        return

    cv2.setNumThreads(1)  # what one DataLoader worker gets (torch also sets 1 thread in workers)
    torch.set_num_threads(1)
    try:
        import PIL
        pillow = PIL.__version__
    except ImportError:
        pillow = None
    machine = machine_info(numpy=np.__version__, pillow=pillow)  # torch_threads: 1, as in one worker
    print("machine:", json.dumps(machine))
    if pillow is None:
        print("Pillow is not installed: the PSMNet-style comparison is skipped")

    rows = []
    real = default_real_data_dir() / "sceneflow_flyingthings3d" / "TEST_A_0000_0006"
    if real.is_dir():
        rows.append(bench_tree("real FlyingThings3D TEST/A/0000/0006", real, args.repeats, pillow is not None))
    else:
        print(f"real Scene Flow sample not found at {real} (set STEREO_REAL_DATA): skipped")
    with tempfile.TemporaryDirectory() as temp:
        start = time.perf_counter()
        generate(temp, num_train=0, num_test=4, height=540, width=960, max_disp=192, seed=0, progress=False)
        generated_s = (time.perf_counter() - start) / 4
        rows.append(bench_tree("synthetic 960x540", Path(temp), args.repeats, pillow is not None))
    for row in rows:
        row["workers_needed"] = workers_needed(row["samples_per_s_per_core"], args.gpu_rates)
    generator = [bench_generator(540, 960, 192, args.generator_pairs), bench_generator(320, 640, 96, args.generator_pairs)]
    generator[0]["render_and_write_ms"] = 1e3 * generated_s

    columns = [("dataset", "dataset", "{}"), ("image_decode_ms", "2×PNG CPU ms", "{:.1f}"),
               ("pfm_decode_ms", "PFM CPU ms", "{:.1f}"), ("crop_colour_normalise_ms", "crop+colour+norm CPU ms", "{:.1f}"),
               ("sample_ms", "sample ms", "{:.1f}"), ("samples_per_s", "samples/s", "{:.1f}"),
               ("beyond_decode_fraction", "beyond decode", "{:.1%}"),
               ("psmnet_style_samples_per_s", "PSMNet-style samples/s", "{:.1f}"),
               ("speedup_vs_psmnet_style", "speed-up", "{:.2f}×")]
    print(f"\nper worker, 960×540 PNG+PFM -> {CROP[0]}×{CROP[1]} crop, median of {args.repeats}; "
          "'beyond decode' = crop+colour+normalise share of each call's time")
    print(" | ".join(title for _, title, _ in columns))
    for row in rows:
        print(" | ".join(fmt.format(row[key]) if key in row else "n/a" for key, _, fmt in columns))
    print("\ngenerator (render only; 960x540 also with PNG+PFM writing):")
    for row in generator:
        extra = f", {row['render_and_write_ms']:.0f} ms with writing" if "render_and_write_ms" in row else ""
        print(f"  {row['size']} max_disp {row['max_disp']:g}: {row['pairs_per_s']:.2f} pairs/s ({row['render_ms']:.0f} ms{extra})")
    record = {"machine": machine, "command": " ".join(["python", *sys.argv]), "crop": CROP,
              "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
              "gpu_rates": args.gpu_rates, "loading": rows, "generator": generator}
    args.out.write_text(json.dumps(record, indent=2))
    print("\n" + markdown(record))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
