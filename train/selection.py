"""Model selection without stems: how well a frozen *judge* transcribes the separated sources.

A weakly supervised user has mixtures and scores, never stems, so a checkpoint or a setting has
to be chosen on those alone. The judge criterion separates each validation mixture, runs a
frozen transcriptor (the step-1 transcriptor of the same chain: it never trained against the
separator being judged in step 3) on every separated source Ŝ_i, and scores its notes against
the score Y:

* ``own_f1``: note F1 of channel i on Ŝ_i against Y_i (mir_eval, onsets ±50 ms), mean over
  instruments: is instrument i's music in Ŝ_i?
* ``crosstalk``: recall of channel j on Ŝ_i against Y_j, j ≠ i, mean over pairs: how much of
  instrument j's music the judge still hears in Ŝ_i (leakage, which ``own_f1`` cannot see);
* ``score = own_f1 - crosstalk``, higher is better.

The judge is itself a critic that separators of step 2 were trained against, so the criterion can
be gamed (reports/bench/findings/08-step1-critic-exploited.md); measure its agreement with the
stems where they may be reported (``benchmarks/diagnostics/stem_free_selection.py``) before
relying on it.

Example::

    judged = judge_separators({"a": sep_a, "b": sep_b}, judge, ShardSet("data", "validation"))
    best = max(judged, key=lambda name: judged[name].score)
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch

from prep.features import stft
from train.inference import separation_masks, transcription_probabilities
from train.metrics import transcription_scores

#: the name under which the unseparated mixture (Ŝ_i = X for every i) is judged
MIXTURE = "input mixture"


@dataclass(frozen=True)
class Judged:
    """One separator's judge scores on a split (see the module docstring)."""

    own_f1: dict[str, float]
    crosstalk: dict[str, float]
    n_tracks: int

    @property
    def score(self) -> float:
        return float(np.mean(list(self.own_f1.values())) - np.mean(list(self.crosstalk.values())))


def judge_magnitudes(
    judge: torch.nn.Module, separated: np.ndarray, roll: np.ndarray, threshold: float = 0.5
) -> tuple[np.ndarray, np.ndarray]:
    """Judge one track: ``separated [I, F, T]`` magnitudes, reference ``roll [I, 88, T]``.

    Returns:
        ``(f1 [I], recall [I, I])``: F1 of channel i on Ŝ_i (NaN where Y_i has no note), and
        recall of channel j on Ŝ_i (``recall[i, j]``; NaN where Y_j has no note).
    """
    n = separated.shape[0]
    f1 = np.full(n, np.nan)
    recall = np.full((n, n), np.nan)
    for i in range(n):
        prob = transcription_probabilities(judge, torch.from_numpy(separated[i]))  # [I, 88, T]
        for j in range(n):
            if not roll[j].any():
                continue
            result = transcription_scores(roll[j], prob[j], threshold=threshold)
            if i == j:
                f1[i] = result.f1
            else:
                recall[i, j] = result.recall
    return f1, recall


@torch.no_grad()
def judge_separators(
    separators: Mapping[str, torch.nn.Module],
    judge: torch.nn.Module,
    shards,
    instruments: list[str] | None = None,
    limit: int | None = None,
    threshold: float = 0.5,
) -> dict[str, Judged]:
    """Judge every separator (and the input mixture, as :data:`MIXTURE`) on ``shards``.

    Reads only ``mix`` and ``roll``: no stem is touched.

    Args:
        separators: name -> separator model (eval mode is set here).
        judge: the frozen transcriptor.
        shards: a ``prep.shards.ShardSet`` (normally the validation split).
        instruments: names in the shards' order (default: the shards').
        limit: judge the first ``limit`` tracks only.
        threshold: the judge's note threshold.
    """
    instruments = list(instruments or shards.instruments)
    judge.eval()
    f1s: dict[str, list[np.ndarray]] = {name: [] for name in (MIXTURE, *separators)}
    recalls: dict[str, list[np.ndarray]] = {name: [] for name in f1s}
    n_tracks = min(len(shards), limit) if limit is not None else len(shards)
    for index in range(n_tracks):
        track = shards.read_track(index, fields=("mix", "roll"))
        mix = torch.from_numpy(np.asarray(track["mix"], dtype=np.float32))
        magnitude = stft(mix).abs()  # [F, T]
        roll = np.transpose(np.asarray(track["roll"], dtype=bool), (1, 2, 0))  # [I, 88, T]
        candidates = {MIXTURE: np.broadcast_to(magnitude.numpy(), (len(instruments),
                                                                   *magnitude.shape))}
        for name, separator in separators.items():
            masks = separation_masks(separator.eval(), magnitude)  # [I, F, T]
            candidates[name] = masks * magnitude.numpy()[None]
        for name, separated in candidates.items():
            f1, recall = judge_magnitudes(judge, np.ascontiguousarray(separated), roll,
                                          threshold)
            f1s[name].append(f1)
            recalls[name].append(recall)
    out = {}
    off_diagonal = ~np.eye(len(instruments), dtype=bool)
    for name in f1s:
        with warnings.catch_warnings():  # an instrument without notes anywhere: NaN, quietly
            warnings.simplefilter("ignore", RuntimeWarning)
            f1 = np.nanmean(np.stack(f1s[name]), axis=0)  # [I]
            recall = np.stack(recalls[name])  # [tracks, I, I]
            crosstalk = {inst: float(np.nanmean(recall[:, k, off_diagonal[k]]))
                         for k, inst in enumerate(instruments)}
        out[name] = Judged({inst: float(f1[k]) for k, inst in enumerate(instruments)},
                           crosstalk, n_tracks)
    return out
