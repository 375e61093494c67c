"""Pack what a GPU training run of the SmolLM2 drafter needs into `.device/`, in pieces that fit the device tool.

    python scripts/device_bundle.py [--records 17275] [--parts 3]

The device machine (see the workplace's device tool) reaches no network, has Python 3.12 with its own torch, and
takes at most 64 MiB of working tree per call, while the embedded target's GGUF alone is 98 MB. So the bundle holds:

- `wheels/`: pure-Python wheels of the packages the device image lacks or has at another version (transformers at the
  version installed here, gguf, datasets and its dill / multiprocess);
- `gguf.part-NN`: the embedded target's GGUF in `--parts` pieces, one carried per call;
- `sharegpt.jsonl.xz`: the first `--records` raw ShareGPT records, xz-compressed: the 17,275 that `--data sharegpt
  --max-samples 17000` reads, so the held-out split (a hash of each first user message) is the same.

It prints the `run` calls that carry the pieces; the last one runs `scripts/device_train.sh`.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import itertools
import json
import lzma
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# Missing from (or older in) the device image: transformers is pinned by coral_hf, the rest are not installed there.
WHEELS = ("transformers", "gguf", "datasets", "dill", "multiprocess")


def download_wheels(destination: Path) -> None:
    """Pure-Python wheels for CPython 3.12 on x86-64 Linux, at the versions installed here."""
    destination.mkdir(parents=True, exist_ok=True)
    pins = [f"{name}=={importlib.metadata.version(name)}" for name in WHEELS]
    platforms = [f"--platform=manylinux_2_{n}_x86_64" for n in (17, 27, 28)]
    command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:"]
    command += ["--python-version=3.12", "--implementation=cp", *platforms, "-d", str(destination), *pins]
    subprocess.run(command, check=True)


def split_gguf(destination: Path, parts: int) -> list[Path]:
    from coral_hf.targets import _embedded_gguf

    data = _embedded_gguf().read_bytes()
    size = -(-len(data) // parts)
    paths = []
    for index in range(parts):
        path = destination / f"gguf.part-{index:02d}"
        path.write_bytes(data[index * size : (index + 1) * size])
        paths.append(path)
    return paths


def write_sharegpt(destination: Path, records: int) -> Path:
    """The first `records` raw records of the packaged ShareGPT file as xz-compressed JSONL."""
    from coral_hf.training.data import _iter_sharegpt_package

    path = destination / "sharegpt.jsonl.xz"
    with lzma.open(path, "wt", encoding="utf-8", preset=6) as handle:
        for record in itertools.islice(_iter_sharegpt_package(), records):
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=17275, help="first ShareGPT records to carry")
    parser.add_argument("--parts", type=int, default=3, help="pieces of the GGUF, one per call")
    parser.add_argument("--out", type=Path, default=REPO / ".device")
    args = parser.parse_args()
    if not args.out.resolve().is_relative_to(REPO):
        parser.error(f"--out {args.out} is outside {REPO}: the device tool carries paths inside the working tree")
    args.out = args.out.resolve()
    args.out.mkdir(exist_ok=True)
    download_wheels(args.out / "wheels")
    parts = split_gguf(args.out, args.parts)
    data = write_sharegpt(args.out, args.records)
    stage = "mkdir -p /tmp/coral-parts && cp -r .device/. /tmp/coral-parts/"
    rel = [str(path.relative_to(REPO)) for path in parts]
    calls = [[".device/wheels", rel[0]], *[[part] for part in rel[1:]]]
    calls[-1].append(str(data.relative_to(REPO)))
    print(f"Bundle in {args.out}. Device calls, back to back (a warm machine keeps /tmp for 30 s):")
    for index, carry in enumerate(calls):
        command = stage + (" && bash scripts/device_train.sh" if index == len(calls) - 1 else "")
        print(f"  run(carry={carry}, command={command!r})")


if __name__ == "__main__":
    main()
