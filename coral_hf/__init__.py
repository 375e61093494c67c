"""coral_hf: CORAL speculative drafters for Hugging Face transformers.

target, tokenizer = coral_hf.load_target("smollm2-135m-instruct")
drafter = coral_hf.load_drafter("smollm2-135m-instruct", target=target)
target.generate(**inputs, assistant_model=drafter)   # same tokens, fewer target forwards
target.generate(**inputs, custom_generate=coral_hf.tree_generate, drafter=drafter)   # a draft tree per round
"""

from transformers import AutoConfig, AutoModel

from .configuration_coral import CoralConfig
from .datastore import NgramDatastore, build_datastore
from .loading import load_drafter
from .modeling_coral import CoralDrafter, CoralDrafterOutput
from .packed_linear import pack_linear_weights, unpack_linear_weights
from .target_utils import CoralTargetMismatchError, check_compatible, target_fingerprint
from .targets import DEFAULT_TARGET, load_target
from .tree_decoding import tree_generate

AutoConfig.register(CoralConfig.model_type, CoralConfig, exist_ok=True)
AutoModel.register(CoralConfig, CoralDrafter, exist_ok=True)

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_TARGET",
    "CoralConfig",
    "CoralDrafter",
    "CoralDrafterOutput",
    "CoralTargetMismatchError",
    "NgramDatastore",
    "build_datastore",
    "check_compatible",
    "load_drafter",
    "load_target",
    "pack_linear_weights",
    "target_fingerprint",
    "tree_generate",
    "unpack_linear_weights",
]
