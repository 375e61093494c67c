"""Tau-only experiment (seventh session, run as is): copy rules for tree + copies (+ datastore), fp32 target, bf16
drafter, 256 new tokens, first turns of HumanEval (30), MT-bench (3 per category) and ShareGPT held-out (12).
Variants: base (latest occurrence of the last 2 tokens, the rule then shipped), longestN (latest occurrence of the
longest repeated suffix up to N), voteN (vote over every occurrence of that suffix: shipped as
`coral_hf.generation.lookup_continuation`), periodicN (latest occurrence, a copy cut by the end repeats its
period), twoN (a second copy from the latest occurrence with another first token, up to N new nodes).
    python docs/bench/session7/copy_rules.py base longest4 longest8 vote4 two4 --json copy_rules.json
Run before the vote was shipped: on a later tree, "base" is the vote.
"""

import argparse
import json
import time

import torch

import coral_hf
import coral_hf.tree_decoding as td
from coral_hf.commands import load_drafter_for_timing, resolve_pack_weights_argument
from coral_hf.eval.bench import encode_chat
from coral_hf.eval.prompts import load_prompts
from coral_hf.generation import lookup_continuation as base_lookup

p = argparse.ArgumentParser()
p.add_argument("variants", nargs="+")
p.add_argument("--sets", nargs="+", default=["humaneval:30", "mtbench:3", "sharegpt-heldout:12"])
p.add_argument("--threads", type=int, default=2)
p.add_argument("--max-new-tokens", type=int, default=256)
p.add_argument("--json")
a = p.parse_args()
torch.set_num_threads(a.threads)
pack, _ = resolve_pack_weights_argument("auto")
target, tok = coral_hf.load_target("smollm2-135m-instruct", dtype=torch.float32, pack_weights=pack)
drafter, _ = load_drafter_for_timing("smollm2-135m-instruct", target, pack)
enc = {}
for spec in a.sets:
    name, _, lim = spec.partition(":")
    enc[name] = [
        encode_chat(tok, [{"role": "user", "content": it.turns[0]}]) for it in load_prompts(name, limit=int(lim))
    ]


def lookup_longest(seq, max_ngram, n):
    return base_lookup(seq, MAXN, n)


def lookup_vote(seq, max_ngram, n):
    """Longest suffix (<= MAXN) with a match; continuation voted over all its matches, ties to the latest."""
    length = seq.shape[0]
    for size in range(min(MAXN, length - 1), 0, -1):
        windows = seq[:-1].unfold(0, size, 1)
        hits = (windows == seq[-size:]).all(dim=-1).nonzero().flatten()
        if hits.numel():
            starts = (hits + size).tolist()
            out = []
            live = starts
            for step in range(n):
                cand = [(s + step) for s in live if s + step < length]
                if not cand:
                    break
                toks = [int(seq[c]) for c in cand]
                counts = {}
                for i, t in enumerate(toks):
                    counts[t] = (counts.get(t, (0, -1))[0] + 1, i)
                best = max(counts, key=lambda t: counts[t])
                out.append(best)
                live = [s for s, t in zip([c - step for c in cand], toks, strict=True) if t == best]
            return torch.tensor(out, dtype=torch.long) if out else None
    return None


def second_copy(seq, n, first):
    """The latest match's continuation whose first token differs from `first`'s."""
    length = seq.shape[0]
    for size in range(min(2, length - 1), 0, -1):
        windows = seq[:-1].unfold(0, size, 1)
        hits = (windows == seq[-size:]).all(dim=-1).nonzero().flatten().tolist()
        for h in reversed(hits):
            s = h + size
            if first is None or int(seq[s]) != int(first[0]):
                if first is None:
                    return None
                return seq[s : s + n]
        if hits:
            return None
    return None


orig_build = td.TreeDecoder.build_tree


def extend(tree, copy, max_new):
    tokens, parents, depths = tree.tokens.tolist(), tree.parents.tolist(), tree.depths.tolist()
    node, added = 0, 0
    for t in copy.tolist():
        child = next((c for c in range(len(tokens)) if parents[c] == node and tokens[c] == t), None)
        if child is None:
            if added >= max_new:
                break
            added += 1
            tokens.append(t)
            parents.append(node)
            depths.append(depths[node] + 1)
            child = len(tokens) - 1
        node = child
    return td.DraftTree(torch.tensor(tokens), torch.tensor(parents), torch.tensor(depths), tree.copy_tail)


def build_two(self, sequence, depth, max_copy=0):
    tree = orig_build(self, sequence, depth, max_copy)
    if max_copy > 0:
        first = base_lookup(sequence[0], 2, 1)
        second = second_copy(sequence[0], min(10, max_copy), first)
        if second is not None and second.numel():
            tree = extend(tree, second, SECOND_NEW)
    return tree


def lookup_periodic(seq, max_ngram, n):
    """Latest match of the longest suffix (<= MAXN); a continuation cut by the sequence's end repeats its period."""
    length = seq.shape[0]
    for size in range(min(MAXN, length - 1), 0, -1):
        windows = seq[:-1].unfold(0, size, 1)
        hits = (windows == seq[-size:]).all(dim=-1).nonzero()
        if hits.numel():
            start = int(hits[-1]) + size
            period = length - start
            return torch.stack([seq[start + (i % period)] for i in range(n)])
    return None


report = {}
for variant in a.variants:
    td.lookup_continuation = base_lookup
    td.TreeDecoder.build_tree = orig_build
    if variant.startswith("longest"):
        MAXN = int(variant[7:])
        td.lookup_continuation = lookup_longest
    elif variant.startswith("vote"):
        MAXN = int(variant[4:])
        td.lookup_continuation = lookup_vote
    elif variant.startswith("periodic"):
        MAXN = int(variant[8:])
        td.lookup_continuation = lookup_periodic
    elif variant.startswith("two"):
        SECOND_NEW = int(variant[3:])
        td.TreeDecoder.build_tree = build_two
    report[variant] = {}
    for name, inputs in enc.items():
        toks = fw = drafted = 0
        per = []
        for ids in inputs:
            out = target.generate(
                ids,
                max_new_tokens=a.max_new_tokens,
                do_sample=False,
                custom_generate=coral_hf.tree_generate,
                drafter=drafter,
            )
            s = drafter.last_generation_stats
            new = out.shape[1] - ids.shape[1]
            toks += new
            fw += s["rounds"] + 1
            drafted += s["drafted"]
            per.append(round(new / (s["rounds"] + 1), 3))
        report[variant][name] = {
            "tau": round(toks / fw, 3),
            "nodes_per_round": round(drafted / (fw - len(inputs)), 2),
            "per_prompt": per,
        }
        print(
            variant,
            name,
            report[variant][name]["tau"],
            report[variant][name]["nodes_per_round"],
            time.strftime("%H:%M:%S"),
            flush=True,
        )
if a.json:
    json.dump(report, open(a.json, "w"), indent=1)
