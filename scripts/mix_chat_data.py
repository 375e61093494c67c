"""Mix JSONL chat files (e.g. outputs of `coral-hf regenerate`) into one shuffled training file for `coral-hf train`.

    python scripts/mix_chat_data.py --output runs/regen/mix.jsonl \
      runs/regen/stdlib-code-greedy.jsonl runs/regen/sharegpt-turn2-greedy.jsonl \
      runs/regen/sharegpt-turn1-greedy.jsonl:4000

Each input is `PATH[:N]` (`.jsonl` or `.jsonl.gz`): all its records, or N of them drawn at random with `--seed`.
Records whose first user message already opened a record of an earlier source are dropped first: the ShareGPT turn-2
file holds the first answer of each conversation too, so its turn-1 records would repeat it. Every record keeps its
fields and gains `source` (the file name) where it has none.
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
from pathlib import Path


def read_records(path: Path) -> list[dict]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def first_question(record: dict) -> str:
    messages = record.get("messages", record.get("conversations", []))
    return next(
        (m.get("content", m.get("value", "")) for m in messages if m.get("role", m.get("from")) in ("user", "human")),
        "",
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("inputs", nargs="+", metavar="PATH[:N]")
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    rng = random.Random(args.seed)
    mixed, seen = [], set()
    for spec in args.inputs:
        path_text, _, count = spec.partition(":")
        path = Path(path_text)
        records = [record for record in read_records(path) if first_question(record) not in seen]
        if count:
            records = rng.sample(records, min(int(count), len(records)))
        seen.update(first_question(record) for record in records)
        for record in records:
            record.setdefault("source", path.name)
        mixed.extend(records)
        print(f"{path}: {len(records)} records")
    rng.shuffle(mixed)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    with args.output.open("w", encoding="utf-8") as handle:
        for record in mixed:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    print(f"wrote {len(mixed)} records to {args.output}")


if __name__ == "__main__":
    main()
