"""`coral-hf push` and `coral-hf pull`: share drafters on the Hugging Face Hub from the command line.

Credentials come from the `HF_TOKEN` environment variable or `hf auth login`, never from a flag: command lines are
visible to other users of the machine and end up in shell histories and logs.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from . import fail

logger = logging.getLogger(__name__)

_PUSH_EPILOG = """\
examples:
  coral-hf push ./my-drafter my-user/smollm2-coral-drafter
  coral-hf push ./my-drafter my-org/drafter --revision experiment-1 --private

The upload is one commit with config.json, generation_config.json, model.safetensors and a model card
(README.md) rendered from the drafter's config (target, training recipe, measured tau / speedup).
If the upload fails, the repo keeps its previous revision. Authentication: HF_TOKEN or `hf auth login`.
HF_ENDPOINT selects another Hub endpoint (a mirror or a self-hosted Hub).
"""

_PULL_EPILOG = """\
examples:
  coral-hf pull my-user/smollm2-coral-drafter --target smollm2-135m-instruct --output-dir ./drafter
  HF_HUB_OFFLINE=1 coral-hf pull my-user/smollm2-coral-drafter --target ./my-target   # from the cache

Only the drafter's files and card are downloaded (never a pickle checkpoint); the drafter is then loaded onto
the target to check that it belongs to it, and the command fails with an explanation if it does not.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `push` and `pull` sub-commands."""
    push = subparsers.add_parser(
        "push",
        help="Upload a drafter directory and its model card to the Hub (one commit).",
        description="Upload a drafter saved with `save_pretrained` (safetensors) to a Hub repo, with a model card.",
        epilog=_PUSH_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    push.add_argument("drafter_dir", metavar="DRAFTER_DIR", help="Directory written by `drafter.save_pretrained`.")
    push.add_argument("repo_id", metavar="REPO_ID", help="Hub repo, `user/name` or `org/name` (created if missing).")
    push.add_argument("--revision", metavar="BRANCH", help="Branch to push to (created from main if missing).")
    push.add_argument("--private", action="store_true", help="Create the repo as private (if it does not exist yet).")
    push.add_argument("--commit-message", metavar="M", help='Commit message (default: "Upload CORAL drafter").')
    push.add_argument("--license", help="`license` metadata for the card, e.g. apache-2.0 (usually the target's).")
    push.add_argument(
        "--card",
        metavar="README",
        type=Path,
        help="Push this README.md instead of the card rendered from the drafter's config.",
    )
    push.set_defaults(func=run_push)

    pull = subparsers.add_parser(
        "pull",
        help="Download a drafter from the Hub and check it matches a target.",
        description="Download a drafter (config, generation config, safetensors, card) and verify it on its target.",
        epilog=_PULL_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    pull.add_argument("repo_id", metavar="REPO_ID", help="Hub repo id of the drafter (or a local drafter directory).")
    pull.add_argument(
        "--target",
        required=True,
        metavar="NAME_OR_PATH",
        help="The target model: `smollm2-135m-instruct` (embedded), a Hub id or a local path.",
    )
    pull.add_argument("--revision", help="Branch, tag or commit of the drafter repo (default: main).")
    pull.add_argument("--target-revision", metavar="REVISION", help="Revision of the target, for Hub targets.")
    pull.add_argument(
        "--output-dir",
        metavar="DIR",
        type=Path,
        help="Write the drafter files and README.md here (default: only the Hub cache).",
    )
    pull.add_argument(
        "--offline",
        action="store_true",
        help="Use the local cache only, for the drafter and the target (like HF_HUB_OFFLINE=1).",
    )
    pull.set_defaults(func=run_pull)


def _hub_errors() -> tuple[type[BaseException], ...]:
    from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError

    from ..hub.safety import UnsafeCheckpointError
    from ..target_utils import CoralTargetMismatchError

    return (
        UnsafeCheckpointError,
        CoralTargetMismatchError,
        HfHubHTTPError,
        EntryNotFoundError,
        FileNotFoundError,
        ValueError,
        OSError,
    )


def run_push(args: argparse.Namespace) -> int:
    """Push `args.drafter_dir` to `args.repo_id`; returns the exit code."""
    from ..hub.push import push_drafter

    try:
        commit = push_drafter(
            args.drafter_dir,
            args.repo_id,
            revision=args.revision,
            private=args.private,
            commit_message=args.commit_message,
            card=args.card,
            license=args.license,
        )
    except _hub_errors() as error:
        return fail(str(error))
    print(f"Pushed {args.drafter_dir} to {commit.repo_url.repo_id} (revision {args.revision or 'main'}): {commit}")
    print(f"commit: {commit.oid}")
    return 0


def _load_target_model(name_or_path: str, revision: str | None, local_files_only: bool = False):
    """The target model only (no tokenizer needed to check a drafter); the embedded default through `load_target`."""
    import torch
    from transformers import AutoModelForCausalLM

    from ..targets import DEFAULT_TARGET, DEFAULT_TARGET_HUB_ID, load_target

    if name_or_path.lower() in (DEFAULT_TARGET, DEFAULT_TARGET_HUB_ID.lower()) and not Path(name_or_path).exists():
        return load_target(name_or_path)[0]
    return AutoModelForCausalLM.from_pretrained(
        name_or_path, revision=revision, dtype=torch.float32, local_files_only=local_files_only
    ).eval()


def run_pull(args: argparse.Namespace) -> int:
    """Pull `args.repo_id`, check it against `args.target`, optionally write it to `args.output_dir`."""
    from ..hub.pull import download_drafter, pull_drafter

    try:
        target = _load_target_model(args.target, args.target_revision, local_files_only=args.offline)
    except (OSError, ValueError) as error:
        return fail(f"cannot load target {args.target!r}: {error}")
    try:
        drafter = pull_drafter(
            args.repo_id,
            target=target,
            revision=args.revision,
            output_dir=args.output_dir,
            local_files_only=args.offline,
        )
        location = args.output_dir or download_drafter(args.repo_id, revision=args.revision, local_files_only=True)
    except _hub_errors() as error:
        return fail(str(error))
    parameters = sum(parameter.numel() for parameter in drafter.parameters())
    print(
        f"Pulled {args.repo_id} (revision {args.revision or 'main'}): {parameters:,} parameters, "
        f"draft length {drafter.config.draft_length}; matches target {args.target}."
    )
    print(f"files: {location}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run `push` / `pull` without the rest of the `coral-hf` command (for `python -m coral_hf.commands.hub`)."""
    parser = argparse.ArgumentParser(prog="coral-hf", description="Share CORAL drafters on the Hugging Face Hub.")
    register(parser.add_subparsers(dest="command", metavar="COMMAND", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
