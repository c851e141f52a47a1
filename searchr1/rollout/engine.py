"""The multi-turn search rollout engine (Search-R1's ``LLMGenerationManager.run_llm_loop``), token in, token out.

Each turn, every unfinished trajectory is sent to the backend, which generates until one of the protocol's
stop strings (``</search>``, ``</answer>`` for ``search_r1``; ``</tool_call>`` for ``tool_call``), EOS or
``max_response_tokens``; the protocol's action of the turn (:mod:`searchr1.protocols`) decides what happens.
With a backend that batches continuously across turns (``MultiTurnBackend``:
``HFBackend``, ``VLLMBackend``) each trajectory continues as soon as its own search returns, and the
searches of all rows that end a turn at the same decoding step go to the retriever in one call (by default
on a worker thread while the other rows keep decoding: :mod:`searchr1.rollout.async_turns`);
otherwise the engine runs turn by turn and all queries of a turn go in one call. After
``max_turns`` search turns a final turn runs in which searches are not executed. Sampled ids are kept
exactly as the backend produced them; observations and invalid-action messages are the protocol's ids
(its bound :class:`~searchr1.protocols.Renderer`), appended with loss mask 0 (``Trajectory.append``). Nothing is
decoded and re-tokenized.

Departures from Search-R1: a turn that ends with EOS and no action ends the trajectory (``"eos"``;
Search-R1 drops the EOS while decoding and appends the invalid-action text); a long observation is
shortened inside ``<information>…</information>`` so the closing tag survives (Search-R1 cuts the ids);
the whole context is capped at ``max_total_tokens`` (the trajectory ends as ``"truncated"``); a failed
search is shown as ``Search failed: …`` instead of crashing the step, and one that found no passage as the
protocol's ``no_results_text`` instead of an empty block.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Sequence
from typing import Any

from searchr1.protocols import Action, get_protocol, search_failed
from searchr1.retrieval import RetrievalError, Retriever, format_passages
from searchr1.rollout.backends.base import (
    Continuation,
    GenerationBackend,
    GenerationOutput,
    MultiTurnBackend,
    SamplingParams,
)
from searchr1.rollout.config import RolloutConfig
from searchr1.rollout.types import RolloutBatch, Trajectory


class RolloutEngine:
    """Runs batched multi-turn rollouts with search.

    Args:
        backend: a :class:`~searchr1.rollout.backends.base.GenerationBackend`.
        retriever: any :class:`~searchr1.retrieval.Retriever` (one ``search`` call per turn).
        tokenizer: the policy's Hugging Face tokenizer (for prompts, observations and decoding).
        config: rollout knobs (``config.protocol`` names the text protocol); defaults to ``RolloutConfig()``.
    """

    def __init__(
        self,
        backend: GenerationBackend,
        retriever: Retriever,
        tokenizer: Any,
        config: RolloutConfig | None = None,
    ) -> None:
        self.backend = backend
        self.retriever = retriever
        self.tokenizer = tokenizer
        self.config = config or RolloutConfig()
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        if pad is None:
            raise ValueError("the tokenizer has neither a pad nor an eos token; set tokenizer.pad_token first")
        self.pad_token_id: int = pad
        self.protocol = get_protocol(self.config.protocol)
        self.renderer = self.protocol.bind(tokenizer)  # checks once that the tokenizer suits the protocol

    def generate_for_questions(
        self, questions: Sequence[str], n: int = 1, seed: int | None = None, use_chat_template: bool = True
    ) -> RolloutBatch:
        """Build the protocol's prompts for ``questions`` (``Protocol.build_prompt``) and roll out."""
        prompts = [self.protocol.build_prompt(q, self.tokenizer, use_chat_template) for q in questions]
        return self.generate(prompts, n=n, seed=seed)

    def generate(self, prompts: Sequence[str], n: int = 1, seed: int | None = None) -> RolloutBatch:
        """Roll out ``n`` samples per prompt (consecutive rows; group id = prompt index).

        Args:
            prompts: fully built prompt strings (chat template already applied).
            n: samples per prompt (GRPO group size).
            seed: makes sampling reproducible (turn ``t`` uses backend seed ``seed * 1000003 + t``).

        Returns:
            The padded batch, its trajectories and timings.
        """
        if n <= 0:
            raise ValueError(f"n (samples per prompt) must be positive, got {n}")
        trajs = self._init_trajectories(prompts, n)
        if self.config.continuous_batching and isinstance(self.backend, MultiTurnBackend):
            if self.config.async_search and getattr(self.backend, "supports_pending_turns", False):
                from searchr1.rollout.async_turns import run_continuous_async

                gen_s, ret_s = run_continuous_async(self, trajs, seed)
            else:
                gen_s, ret_s = self._run_continuous(trajs, seed)
        else:
            gen_s, ret_s = self._run_turns(trajs, seed)
        for t in trajs:
            t.response_text = self.tokenizer.decode(t.response_ids, skip_special_tokens=False)
        batch = RolloutBatch.from_trajectories(trajs, self.pad_token_id)
        batch.generation_seconds, batch.retrieval_seconds = gen_s, ret_s
        return batch

    def _run_turns(self, trajs: list[Trajectory], seed: int | None) -> tuple[float, float]:
        """Turn by turn: every unfinished trajectory generates, then all searches of the turn run together.

        Returns:
            generation and retrieval seconds.
        """
        gen_s = ret_s = 0.0
        cfg = self.config
        lockstep = getattr(self.backend, "lockstep", None)  # sharded model: every rank runs every turn's decode
        for turn in range(cfg.max_turns + 1):
            active = [t for t in trajs if not t.done]
            if not (lockstep.any(bool(active)) if lockstep is not None else active):
                break
            final = turn == cfg.max_turns
            budget = max((cfg.max_total_tokens - t.total_tokens for t in active), default=1)
            params = self._sampling_params(min(cfg.max_response_tokens, budget), seed, turn)
            start = time.perf_counter()
            outputs = self.backend.generate([t.prompt_ids + t.response_ids for t in active], params)
            gen_s += time.perf_counter() - start
            if len(outputs) != len(active):
                raise RuntimeError(f"backend returned {len(outputs)} outputs for {len(active)} prompts")
            searches = []
            for traj, out in zip(active, outputs):
                action = self._take_turn(traj, out, final)
                if action is not None and action.kind == "search":
                    searches.append((traj, action.content))
            ret_s += self._execute_searches(searches)
        return gen_s, ret_s

    def _run_continuous(self, trajs: list[Trajectory], seed: int | None) -> tuple[float, float]:
        """Continuous batching: the backend decodes all rows and calls back whenever some rows end a turn.

        The searches of the rows that ended a turn at the same decoding step go to the retriever in one call.

        Returns:
            generation seconds (decoding, callback excluded) and retrieval seconds.
        """
        cfg = self.config
        spent = {"callback": 0.0, "retrieval": 0.0}

        def room(traj: Trajectory) -> int:
            return min(cfg.max_response_tokens, cfg.max_total_tokens - traj.total_tokens)

        def on_turn_end(ended: list[tuple[int, GenerationOutput]]) -> list[Continuation | None]:
            start = time.perf_counter()
            searches = []
            for index, out in ended:
                traj = trajs[index]
                action = self._take_turn(traj, out, final=traj.num_turns >= cfg.max_turns)
                if action is not None and action.kind == "search":
                    searches.append((traj, action.content))
            spent["retrieval"] += self._execute_searches(searches)
            conts = [
                None if trajs[i].done else Continuation(trajs[i].inserted_after_last_turn(), room(trajs[i]))
                for i, _ in ended
            ]
            spent["callback"] += time.perf_counter() - start
            return conts

        params = self._sampling_params(cfg.max_response_tokens, seed, 0)
        start = time.perf_counter()
        self.backend.generate_multiturn(  # type: ignore[attr-defined]
            [t.prompt_ids for t in trajs], params, on_turn_end, max_new_tokens=[room(t) for t in trajs]
        )
        return time.perf_counter() - start - spent["callback"], spent["retrieval"]

    def _init_trajectories(self, prompts: Sequence[str], n: int) -> list[Trajectory]:
        limit = self.config.max_prompt_tokens
        encoded = self.tokenizer(list(prompts), add_special_tokens=False)["input_ids"]
        long = [i for i, ids in enumerate(encoded) if len(ids) > limit]
        if long:
            warnings.warn(
                f"{len(long)} prompt(s) longer than max_prompt_tokens={limit} were left-truncated "
                f"(first: prompt {long[0]} with {len(encoded[long[0]])} tokens); "
                "raise max_prompt_tokens to keep them whole",
                stacklevel=3,
            )
        return [
            Trajectory(prompt_ids=list(ids[-limit:]), group_id=i, prompt_index=i)
            for i, ids in enumerate(encoded)
            for _ in range(n)
        ]

    def _sampling_params(self, max_new_tokens: int, seed: int | None, turn: int) -> SamplingParams:
        cfg = self.config
        return SamplingParams(
            max_new_tokens=max_new_tokens,
            temperature=cfg.temperature,
            top_p=cfg.top_p,
            top_k=cfg.top_k,
            do_sample=cfg.do_sample,
            stop=list(self.protocol.stop_strings),
            seed=None if seed is None else seed * 1_000_003 + turn,
        )

    def _take_turn(self, traj: Trajectory, out: GenerationOutput, final: bool) -> Action | None:
        """Append one generated turn and decide what follows; returns a search action to execute, else None."""
        budget = self.config.max_total_tokens - traj.total_tokens
        ids, logprobs = out.token_ids[:budget], out.logprobs[:budget]
        cut = len(ids) < len(out.token_ids)
        traj.append(ids, "policy", logprobs, None if out.versions is None else out.versions[:budget])
        traj.num_turns += 1
        text = self.tokenizer.decode(ids, skip_special_tokens=False)
        traj.policy_texts.append(text)
        action = self.protocol.parse_action(text)
        if action.kind == "answer":
            traj.answer, traj.finish_reason = action.content, "answer"
        elif cut:
            traj.finish_reason = "truncated"
        elif out.finish_reason == "eos" and action.kind != "search":  # also on the final turn (``direct``)
            traj.finish_reason = "eos"
        elif final:
            traj.finish_reason = "length" if out.finish_reason == "length" else "max_turns"
        elif traj.total_tokens >= self.config.max_total_tokens:
            traj.finish_reason = "truncated"
        elif action.kind == "search":
            return action
        else:
            traj.invalid_actions += 1
            self._append_inserted(traj, self.renderer.invalid_ids(action), "invalid")
        return None

    def _append_inserted(self, traj: Trajectory, ids: list[int], kind: str) -> None:
        """Append non-sampled text, clipped to the context cap (reaching it ends the trajectory)."""
        room = self.config.max_total_tokens - traj.total_tokens
        traj.append(ids[:room], kind)
        if len(ids) >= room:
            traj.finish_reason = "truncated"

    def _execute_searches(self, searches: list[tuple[Trajectory, str]]) -> float:
        """Run all queries of a turn in one retriever call and append the observations; returns seconds."""
        if not searches:
            return 0.0
        queries = [q for _, q in searches]
        start = time.perf_counter()
        results, error = None, None
        try:
            results = self.retriever.search(queries, self.config.topk)
            if len(results) != len(queries):
                raise RuntimeError(f"retriever returned {len(results)} result lists for {len(queries)} queries")
        except RetrievalError as err:
            error = err
        seconds = time.perf_counter() - start
        self._apply_searches(searches, results, error)
        return seconds

    def _apply_searches(
        self, searches: list[tuple[Trajectory, str]], results: list | None, error: BaseException | None
    ) -> None:
        """Append each search's observation (or the failure message) to its trajectory."""
        if error is not None:
            if not isinstance(error, RetrievalError) or self.config.on_search_error == "raise":
                raise error
            results, bodies, failed = [[] for _ in searches], [search_failed(str(error))] * len(searches), True
        else:
            empty = self.protocol.no_results_text
            bodies, failed = [format_passages(r) if r else empty for r in results], False
        for (traj, query), passages, body in zip(searches, results, bodies):
            traj.num_searches += 1
            traj.search_failures += int(failed)
            traj.queries.append(query)
            traj.doc_ids.append([p.id for p in passages])
            self._append_inserted(traj, self.renderer.observation_ids(body, self.config.max_obs_tokens), "observation")
