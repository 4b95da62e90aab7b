"""The testbed tokenizer: a byte-level BPE saved as a real `transformers` fast tokenizer.

Like Qwen2.5's, it is byte-level (every string round-trips), has a chat template, makes ``"\\n\\n"`` one
token, and owns the PRM step tag ``<extra_0>`` (the very tag Qwen2.5-Math-PRM uses), so the library
drives the testbed and the real models through the same code. Digits are single tokens, which is what
lets small models learn the arithmetic.
"""

from __future__ import annotations

from typing import Iterable

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from trim.backends.prompts import PRM_STEP_TAG

BOS, EOS, PAD = "<|bos|>", "<|endoftext|>", "<|pad|>"
USER, ASSISTANT = "<|user|>", "<|assistant|>"
STEP_TAG = PRM_STEP_TAG
SPECIAL_TOKENS = [PAD, BOS, EOS, USER, ASSISTANT, STEP_TAG]

CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{% if message['role'] == 'user' %}<|user|>{{ message['content'] }}"
    "{% elif message['role'] == 'assistant' %}<|assistant|>{{ message['content'] }}{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}"
)

# Pieces BPE may merge within: the step delimiter, \boxed{, words, single digits and punctuation (each
# with its leading space), and any other whitespace.
_PIECES = r"\n\n|\\boxed\{| ?[A-Za-z]+| ?\d| ?[^\sA-Za-z\d]|\s"


def build_tokenizer(corpus: Iterable[str], vocab_size: int = 400) -> PreTrainedTokenizerFast:
    """Train the byte-level BPE on `corpus` and wrap it as a fast tokenizer with the chat template."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(_PIECES), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        additional_special_tokens=[USER, ASSISTANT, STEP_TAG],
        clean_up_tokenization_spaces=False,
        padding_side="left",
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast
