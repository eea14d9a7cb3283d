#!/usr/bin/env python3
"""Writes data/alpaca-eval/{train,valid}.jsonl from the 805 records of `example/outputs.json` in
the PyPI source package alpaca-eval 0.6.6 (Apache-2.0).

    pip download --no-deps --no-binary :all: alpaca-eval==0.6.6 -d /tmp/alpaca
    python3 scripts/prepare_alpaca_eval.py /tmp/alpaca/alpaca_eval-0.6.6.tar.gz

Only `instruction` and `output` are kept, in the file's order. The validation split is fixed:
every 10th record (0-based index 9, 19, ...) goes to valid.jsonl (80 records), the other 725 to
train.jsonl. Standard library only.
"""

import hashlib
import json
import sys
import tarfile
from pathlib import Path

MEMBER = "alpaca_eval-0.6.6/example/outputs.json"
OUT = Path(__file__).resolve().parent.parent / "data" / "alpaca-eval"


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    src = Path(sys.argv[1])
    with tarfile.open(src) as tar:
        raw = tar.extractfile(MEMBER).read()
    records = json.loads(raw)
    assert len(records) == 805, len(records)
    OUT.mkdir(parents=True, exist_ok=True)
    splits = {"train": [], "valid": []}
    for i, r in enumerate(records):
        assert isinstance(r["instruction"], str) and isinstance(r["output"], str), i
        split = "valid" if i % 10 == 9 else "train"
        splits[split].append({"instruction": r["instruction"], "output": r["output"]})
    for name, rows in splits.items():
        with open(OUT / f"{name}.jsonl", "w", encoding="utf-8", newline="\n") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
        print(f"{name}.jsonl: {len(rows)} records")
    print(f"source sha256 ({src.name}): {hashlib.sha256(src.read_bytes()).hexdigest()}")
    print(f"outputs.json sha256: {hashlib.sha256(raw).hexdigest()}")


if __name__ == "__main__":
    main()
