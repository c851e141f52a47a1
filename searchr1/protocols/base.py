"""What every text protocol provides, and the registry that resolves a protocol by name.

A protocol is the text contract between the policy and the search environment: how the prompt is built, where a
generation turn stops, how one turn's text becomes an :class:`Action`, and which token ids are appended (loss
mask 0) after a search or an invalid action. The token-level half needs the tokenizer, so a protocol is *bound*
to one tokenizer (:meth:`Protocol.bind`), which is also where a protocol checks that the tokenizer suits it.
Answers are always the last ``<answer>…</answer>`` the policy sampled, in every protocol, so rewards and
evaluation are shared.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

from searchr1.registry import Registry


@dataclass(frozen=True)
class Action:
    """The decision of one turn.

    Attributes:
        kind: ``"search"``, ``"answer"`` or ``"invalid"``.
        content: the stripped query / answer text ('' for invalid actions).
        reason: why an action is invalid, in words ('' when the protocol has a single invalid-action text).
    """

    kind: str
    content: str = ""
    reason: str = ""


class Renderer(ABC):
    """A protocol bound to one tokenizer: the exact ids appended after a turn (all with loss mask 0)."""

    @abstractmethod
    def observation_ids(self, body: str, max_tokens: int) -> list[int]:
        """Ids shown after a search whose formatted passages are ``body`` (at most ``max_tokens`` of them)."""

    @abstractmethod
    def invalid_ids(self, action: Action) -> list[int]:
        """Ids shown after a turn whose action is invalid."""


class Protocol(ABC):
    """Prompt, stop strings, action parsing and (through :meth:`bind`) token rendering of one protocol."""

    name: str
    """Registry name."""
    stop_strings: tuple[str, ...]
    """A generation turn ends right after any of these strings (EOS and the token limit also end it)."""
    no_results_text: str
    """Observation body of a search that found no passage (e.g. BM25 and a query without any indexed term)."""

    @abstractmethod
    def build_prompt(self, question: str, tokenizer: Any | None = None, use_chat_template: bool = True) -> str:
        """The policy prompt for one question (tokenized later without adding special tokens again)."""

    @abstractmethod
    def parse_action(self, text: str) -> Action:
        """The action of one turn's sampled text; never raises."""

    @abstractmethod
    def write_turn(self, thought: str, action: Action) -> str:
        """The text a policy writes in this protocol to reason ``thought`` and take ``action`` (teacher scripts).

        A search or answer turn written here parses back to ``action``; a turn that ends in none of
        :attr:`stop_strings` is a whole message, which a model closes with its EOS token.
        """

    @abstractmethod
    def observation_blocks(self, text: str) -> list[str]:
        """Contents of the observation blocks (retrieved passages) in a decoded trajectory text."""

    @abstractmethod
    def tokenizer_texts(self) -> list[str]:
        """This protocol's fixed texts (prompt, inserted messages), to train tiny tokenizers that encode them
        compactly."""

    @abstractmethod
    def bind(self, tokenizer: Any) -> Renderer:
        """This protocol's token rendering for ``tokenizer`` (raises where the tokenizer cannot carry it)."""


PROTOCOLS: Registry[Protocol] = Registry("protocol")
