"""Audio data: the embedded spoken-digit set synthesised with espeak-ng, the Free Spoken Digit Dataset,
folders of audio files and Hugging Face ``datasets`` (``source: hf``). Every source returns file paths (or decoded
values) with integer labels; the processor decodes."""

from __future__ import annotations

import csv
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from zoo import ExampleSet
from zoo.data import folder_source
from zoo.paths import cache_dir, data_dir, fresh_folder
from zoo.plugin import source_loader

DIGITS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
# espeak-ng's own English voices (no MBROLA data needed); the last two are held out for testing.
ACCENTS = ["en-us", "en-gb", "en-gb-x-rp", "en-gb-x-gbclan", "en-gb-x-gbcwmd", "en-029", "en-gb-scotland"]
TEST_ACCENTS = ["en-029", "en-gb-scotland"]
VARIANTS = ["m3", "f2", "m7"]
SPEEDS = [140, 180]
PITCHES = [35, 65]




def synthesize_digits(root: str | Path, *, accents: list[str] = ACCENTS, variants: list[str] = VARIANTS,
                      speeds: list[int] = SPEEDS, pitches: list[int] = PITCHES, workers: int = 4) -> Path:
    """Write ``root/<digit>/<accent>+<variant>_s<speed>_p<pitch>.wav`` (22.05 kHz mono) with espeak-ng and a
    ``metadata.csv`` (audiofolder layout). espeak-ng output is deterministic: the same files every run."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise RuntimeError("espeak-ng is not installed (Debian package espeak-ng; `make demo` installs it)")
    root = Path(root)
    if (root / "metadata.csv").is_file():
        return root
    with fresh_folder(root) as tmp:
        _synthesize(tmp, exe, accents, variants, speeds, pitches, workers)
    return root


def _synthesize(tmp: Path, exe: str, accents: list[str], variants: list[str], speeds: list[int],
                pitches: list[int], workers: int) -> None:
    jobs = []
    for label, word in enumerate(DIGITS):
        (tmp / str(label)).mkdir(parents=True, exist_ok=True)
        for accent in accents:
            for variant in variants:
                for speed in speeds:
                    for pitch in pitches:
                        rel = f"{label}/{accent}+{variant}_s{speed}_p{pitch}.wav"
                        jobs.append((rel, label, accent, variant, speed, pitch, word))

    def run(job: tuple) -> None:
        rel, _, accent, variant, speed, pitch, word = job
        subprocess.run([exe, "-v", f"{accent}+{variant}", "-s", str(speed), "-p", str(pitch), "-w",
                        str(tmp / rel), word], check=True, capture_output=True)

    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(run, jobs))
    with open(tmp / "metadata.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["file_name", "label", "accent", "variant", "speed", "pitch", "split"])
        for rel, label, accent, variant, speed, pitch, _ in jobs:
            w.writerow([rel, label, accent, variant, speed, pitch, "test" if accent in TEST_ACCENTS else "train"])


def _espeak(spec: dict[str, Any]) -> ExampleSet:
    root = synthesize_digits(spec.get("root") or cache_dir() / "espeak-digits")
    split = spec.get("split", "train")
    rows = list(csv.DictReader(open(root / "metadata.csv")))
    if split != "all":
        rows = [r for r in rows if r["split"] == split]
    if "limit" in spec:
        rows = rows[: int(spec["limit"])]
    return ExampleSet([str(root / r["file_name"]) for r in rows], [int(r["label"]) for r in rows],
                      [r["file_name"] for r in rows], DIGITS)


def _fsdd(spec: dict[str, Any]) -> ExampleSet:
    """Free Spoken Digit Dataset: ``{digit}_{speaker}_{index}.wav``; ``split`` train/test is
    speaker-disjoint (``test_speakers``, default the last speaker alphabetically)."""
    root = Path(spec.get("root") or data_dir() / "fsdd" / "recordings")
    if not root.is_dir():
        raise FileNotFoundError(f"FSDD not found at {root} (set ZOO_DATA or data.root)")
    files = sorted(root.glob("*.wav"))
    speakers = sorted({f.stem.split("_")[1] for f in files})
    test = set(spec.get("test_speakers", speakers[-1:]))
    split = spec.get("split", "train")
    keep = [f for f in files if split == "all" or ((f.stem.split("_")[1] in test) == (split == "test"))]
    if "limit" in spec:
        keep = keep[:: max(1, len(keep) // int(spec["limit"]))][: int(spec["limit"])]
    return ExampleSet([str(f) for f in keep], [int(f.stem.split("_")[0]) for f in keep], [f.name for f in keep],
                      [str(i) for i in range(10)])


def _prepare(ds: Any, spec: dict[str, Any]) -> Any:
    """Keep the encoded audio (path/bytes): the processor decodes and resamples it in a DataLoader worker."""
    from datasets import Audio
    col = spec.get("input_column") or "audio"
    return ds.cast_column(col, Audio(decode=False))


AUDIO_SUFFIXES = (".wav", ".flac", ".mp3", ".ogg", ".opus", ".m4a", ".aac", ".aiff", ".aif", ".wma")


def _folder(spec: dict[str, Any]) -> ExampleSet:
    """``path``: a folder of audio files, in one subfolder per class (``split`` picks ``path/<split>``)."""
    return folder_source(spec, AUDIO_SUFFIXES, "audio")


SOURCES = {"espeak-digits": _espeak, "fsdd": _fsdd, "folder": _folder}

load_data = source_loader("audio", SOURCES, "espeak-digits", hf_input="audio", hf_prepare=_prepare)


if __name__ == "__main__":  # python -m modalities.audio.data OUT_DIR: synthesise the spoken-digit set
    import sys
    out = synthesize_digits(sys.argv[1] if len(sys.argv) > 1 else cache_dir() / "espeak-digits")
    print(f"{sum(1 for _ in out.rglob('*.wav'))} clips in {out}")
