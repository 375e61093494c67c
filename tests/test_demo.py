"""The demo's verdict line: it must not call a slowdown the fastest decoding."""

import torch

from coral_hf.commands.demo import speed_verdict


def test_verdict_names_the_fastest_mode_when_it_beats_plain():
    line = speed_verdict({"chain": 1.1, "tree": 1.4}, torch.bfloat16, "CPU with avx512_bf16")
    assert line == "fastest here: tree decoding (1.40x over plain generate)"


def test_verdict_says_plain_is_faster_when_every_mode_is_slower():
    line = speed_verdict({"chain": 0.67, "tree": 0.75}, torch.float32, "CPU without amx_bf16 / avx512_bf16")
    assert line.startswith("plain generate is faster here")
    assert "tree decoding, runs at 0.75x in float32 (CPU without amx_bf16 / avx512_bf16)" in line
    assert "fastest here" not in line
