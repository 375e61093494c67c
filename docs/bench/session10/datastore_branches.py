"""Tree + copies tau with more than one datastore continuation per round: a tau experiment (no timing).

The tree proposes one continuation from the datastore, the one the most occurrences of the context's longest suffix
agree on. Where they split, the runner-up's continuation (its first token the second most frequent) could be the
target's. This adds up to `branches - 1` runner-ups, each capped like the first at `tree_unmatched_copy_tokens` new
nodes, and measures greedy tree decoding's tau and the mean verified tree size (fp32, outputs checked against the
baseline run's). Patches the shipped classes in this process only.

    .venv/bin/python docs/bench/session10/datastore_branches.py --limit 30 --branches 1 2 3
"""

import argparse
import json
import time

import numpy as np
import torch

import coral_hf
from coral_hf.commands import load_drafter_for_timing, resolve_pack_weights_argument
from coral_hf.datastore import _MAX_SAMPLES, _SEPARATOR, NgramDatastore
from coral_hf.eval.bench import encode_chat, machine_info
from coral_hf.eval.prompts import load_prompts
from coral_hf.tree_decoding import TreeDecoder


def ranked_continuations(store: NgramDatastore, context, num_tokens, min_ngram, branches):
    """The continuations whose first tokens are the `branches` most frequent after the longest suffix found."""
    found = store._match(context[-store.max_ngram :].tolist(), max(min_ngram, 1))
    if found is None or num_tokens < 1:
        return []
    low, high = found
    ends = store.order[low:high].astype(np.int64)
    if ends.size > _MAX_SAMPLES:
        ends = ends[np.linspace(0, ends.size - 1, _MAX_SAMPLES).astype(np.int64)]
    first = store.tokens[np.minimum(ends + 1, store.tokens.shape[0] - 1)]
    keep = first != _SEPARATOR
    values, counts = np.unique(first[keep], return_counts=True)
    order = np.lexsort((values, -counts))[:branches]  # most frequent first, smaller id on ties (as `lookup`)
    result = []
    for token in values[order]:
        chosen = ends[first == token]
        proposal = [int(token)]
        for step in range(2, num_tokens + 1):
            following = store.tokens[np.minimum(chosen + step, store.tokens.shape[0] - 1)]
            vals, cnts = np.unique(following[following != _SEPARATOR], return_counts=True)
            if not vals.size:
                break
            nxt = int(vals[cnts.argmax()])
            proposal.append(nxt)
            chosen = chosen[following == nxt]
        result.append(torch.tensor(proposal, dtype=torch.long, device=context.device))
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--prompts", default="humaneval")
    parser.add_argument("--limit", type=int, default=30)
    parser.add_argument("--branches", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument(
        "--extend",
        nargs="+",
        default=[],
        choices=("children", "leaves"),
        help="Also runs with one datastore branch plus the datastore's continuation below each drafter node of this "
        "kind (root children / leaves of the drafter's tree), the context being the path to it.",
    )
    parser.add_argument("--tree", help="TOTAL,DEPTH,TOP_K instead of the drafter's shipped tree.")
    parser.add_argument("--json")
    args = parser.parse_args()
    torch.set_num_threads(2)
    pack, _ = resolve_pack_weights_argument("auto", dtype=torch.float32)
    target, tokenizer = coral_hf.load_target(dtype=torch.float32, pack_weights=pack)
    drafter, _ = load_drafter_for_timing("smollm2-135m-instruct", target, pack)
    store = drafter.datastore
    prompts = load_prompts(args.prompts, limit=args.limit)
    encoded = [encode_chat(tokenizer, [{"role": "user", "content": item.turns[0]}]) for item in prompts]

    state = {"branches": 1, "extend": None, "extra": [], "first": None, "nodes": 0, "trees": 0}
    original_lookup = NgramDatastore.lookup
    original_add = TreeDecoder._add_copy_branch
    original_build = TreeDecoder.build_tree

    def lookup(self, context, num_tokens, min_ngram=3):
        state["context"], state["num_tokens"], state["min_ngram"] = context, num_tokens, min_ngram
        if state["branches"] == 1:
            found = original_lookup(self, context, num_tokens, min_ngram)
            if found is None and state["extend"]:
                found = context.new_empty(0)  # an empty branch, so that the extension below still runs
            state["first"] = found
            return found
        continuations = ranked_continuations(self, context, num_tokens, min_ngram, state["branches"])
        if not continuations:
            return None
        state["first"], state["extra"] = continuations[0], continuations[1:]
        return continuations[0]

    def add(keep, tokens, parents, depths, copy, max_new=None):
        drafted = list(keep)  # before this branch: the drafter's nodes (and the context copy)
        node = original_add(keep, tokens, parents, depths, copy, max_new)
        if copy is state["first"] and state["extra"]:
            for extra in state["extra"]:
                original_add(keep, tokens, parents, depths, extra, max_new)
            state["first"], state["extra"] = None, []
        if copy is state["first"] and state["extend"]:
            extend_below(keep, tokens, parents, depths, drafted, max_new)
        return node

    def extend_below(keep, tokens, parents, depths, drafted, max_new):
        has_child = {parents[node] for node in drafted if node}
        if state["extend"] == "children":
            chosen = [node for node in drafted if node and parents[node] == 0]
        else:
            chosen = [node for node in drafted if node and node not in has_child]
        for start in chosen:
            path, node = [], start
            while node:
                path.append(int(tokens[node]))
                node = parents[node]
            path = state["context"].new_tensor(path[::-1])
            continuation = original_lookup(
                store, torch.cat([state["context"], path]), state["num_tokens"], state["min_ngram"]
            )
            if continuation is not None:
                # From the root along the node's path (all in the tree already), then the continuation below it.
                original_add(keep, tokens, parents, depths, torch.cat([path, continuation]), max_new)

    def build_tree(self, *a, **k):
        tree = original_build(self, *a, **k)
        state["nodes"] += tree.tokens.shape[0]
        state["trees"] += 1
        return tree

    NgramDatastore.lookup = lookup
    TreeDecoder._add_copy_branch = staticmethod(add)
    TreeDecoder.build_tree = build_tree

    tree_settings = {}
    if args.tree:
        total, depth, top_k = (int(part) for part in args.tree.split(","))
        tree_settings = {"tree_total_tokens": total, "tree_depth": depth, "tree_top_k": top_k}
    report = {"tree": args.tree or "shipped", "prompts": args.prompts, "limit": len(encoded), "runs": {}}
    baseline = None
    for branches in [*args.branches, *args.extend]:
        extend = branches if isinstance(branches, str) else None
        state.update(branches=1 if extend else branches, extend=extend, nodes=0, trees=0)
        tokens = forwards = 0
        outputs, per_prompt = [], []
        start = time.time()
        for input_ids in encoded:
            output = target.generate(
                input_ids,
                max_new_tokens=args.max_new_tokens,
                do_sample=False,
                custom_generate=coral_hf.tree_generate,
                drafter=drafter,
                **tree_settings,
            )
            new = output.shape[1] - input_ids.shape[1]
            calls = drafter.last_generation_stats["rounds"] + 1
            tokens, forwards = tokens + new, forwards + calls
            per_prompt.append(round(new / calls, 3))
            outputs.append(output)
        if baseline is None:
            baseline = outputs
        identical = sum(torch.equal(a, b) for a, b in zip(outputs, baseline, strict=True))
        run = {
            "tau": round(tokens / forwards, 3),
            "mean_tree_nodes": round(state["nodes"] / max(state["trees"], 1), 2),
            "identical_to_first_run": identical,
            "per_prompt": per_prompt,
            "minutes": round((time.time() - start) / 60, 1),
        }
        report["runs"][branches] = run
        print(branches, {k: v for k, v in run.items() if k != "per_prompt"}, flush=True)
    report["machine"] = machine_info(torch.device("cpu"))
    if args.json:
        with open(args.json, "w") as handle:
            handle.write(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
