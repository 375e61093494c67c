"""Generate with a CORAL drafter: the same greedy tokens as plain `generate`, in fewer target forwards.

python examples/generate_with_drafter.py                      # embedded SmolLM2 target and its shipped drafter
python examples/generate_with_drafter.py --target ./my-model --drafter ./my-drafter --prompt "Hello"
python examples/generate_with_drafter.py --hybrid 4           # drafter + prompt-lookup copies of up to 4 tokens
python examples/generate_with_drafter.py --tree               # a dynamic draft tree per round (EAGLE-2)
"""

from __future__ import annotations

import argparse

import torch

import coral_hf


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", default="smollm2-135m-instruct")
    parser.add_argument("--drafter", default=None, help="Drafter directory or Hub id (default: the shipped one).")
    parser.add_argument("--prompt", default="Write a Python function that reverses a string.")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--hybrid", type=int, default=None, metavar="N", help="Copy up to N tokens from the context.")
    parser.add_argument(
        "--tree", action="store_true", help="Tree decoding (coral_hf.tree_generate) instead of a chain."
    )
    args = parser.parse_args(argv)

    target, tokenizer = coral_hf.load_target(args.target)
    drafter = coral_hf.load_drafter(args.drafter or args.target, target=target)
    if args.hybrid is not None:  # the drafter reads its draft settings from its own generation config
        drafter.generation_config.prompt_lookup_num_tokens = args.hybrid or None
    inputs = tokenizer.apply_chat_template(
        [{"role": "user", "content": args.prompt}], add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    plain = target.generate(**inputs, max_new_tokens=args.max_new_tokens, do_sample=False)
    if args.tree:  # the drafter goes in as `drafter=`: transformers hands custom_generate its own kwargs
        decoding = {"custom_generate": coral_hf.tree_generate, "drafter": drafter}
    else:
        decoding = {"assistant_model": drafter}
    assisted = target.generate(**inputs, max_new_tokens=args.max_new_tokens, do_sample=False, **decoding)
    new_tokens = assisted.shape[1] - inputs["input_ids"].shape[1]
    stats = drafter.last_generation_stats
    print(tokenizer.decode(assisted[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True))
    identical = torch.equal(plain, assisted)
    print(f"identical to plain generate: {identical}; {new_tokens} tokens in {stats['rounds']} rounds")
    return 0 if identical else 1


if __name__ == "__main__":
    raise SystemExit(main())
