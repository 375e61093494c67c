#!/bin/bash
# The datastore the fifth session shipped (now rebuilt with more code answers by docs/bench/datastore-code2/run.sh;
# the target's own answers: 6,200 code answers and 15,200 ShareGPT first and
# second turns, held-out split left out; artifacts/regen/README.md) and the tree + copies tau it gives on the first
# turns stages 8-12 were compared on (fp32 target, bf16 drafter, 256 new tokens). tau.json was measured on a copy of
# the shipped drafter with this datastore (runs/ds-test); the second command measures the same without it.
cd "$(dirname "$0")/../../.."
.venv/bin/coral-hf datastore --drafter coral_hf/drafters/smollm2-135m-instruct --data \
  artifacts/regen/pkg-code-greedy.jsonl.gz artifacts/regen/stdlib-code-greedy.jsonl.gz \
  artifacts/regen/sharegpt-turn1-greedy.jsonl.gz artifacts/regen/sharegpt-turn2-greedy.jsonl.gz
.venv/bin/python scripts/compare_drafter_tau.py smollm2-135m-instruct --sets humaneval:30 mtbench:3 \
  sharegpt-heldout:12 --json docs/bench/datastore/tau.json
.venv/bin/python scripts/compare_drafter_tau.py smollm2-135m-instruct --no-datastore --sets humaneval:30 mtbench:3 \
  sharegpt-heldout:12 --json docs/bench/datastore/tau-without.json
