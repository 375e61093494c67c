"""Push a drafter to the Hub with its model card, and pull it back checked against its target.

    python examples/push_pull.py --drafter ./my-drafter --repo-id me/smollm2-coral-drafter
    HF_ENDPOINT=http://localhost:8080 python examples/push_pull.py ...   # a private or local Hub

Pulling refuses a drafter built for another target (`CoralTargetMismatchError`).
"""

from __future__ import annotations

import argparse

import coral_hf


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", default="smollm2-135m-instruct")
    parser.add_argument("--drafter", required=True, help="Local drafter directory.")
    parser.add_argument("--repo-id", required=True)
    parser.add_argument("--token", default=None)
    args = parser.parse_args(argv)

    target, _ = coral_hf.load_target(args.target)
    drafter = coral_hf.load_drafter(args.drafter, target=target)
    commit = drafter.push_to_hub(args.repo_id, token=args.token, commit_message="Upload CORAL drafter")
    print(f"pushed: {commit}")
    pulled = coral_hf.load_drafter(args.repo_id, target=target, token=args.token)
    print(f"pulled {args.repo_id}: draft length {pulled.generation_config.num_assistant_tokens}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
