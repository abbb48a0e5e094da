"""Seeded per-stem effects chains for the synthetic corpus, applied with pedalboard.

Slakh2100's stems come from commercial virtual instruments whose patches carry their own
processing (amp models, EQ, compression, chorus, room), so two stems of one GM program can
sound quite different. A FluidSynth render is dry and always the same. To bring that variety
to the rendered corpus, every stem gets a channel strip whose settings are drawn from the
track's seeded generator:

    drive (guitars only) -> EQ (low shelf, peak, high shelf) -> compressor
        -> chorus (sometimes) -> reverb (moderate)

Reverb is kept moderate (short-to-medium rooms, mostly dry) so that the audio stays
recognisably aligned with the MIDI: the notes' onsets and offsets must still be visible,
since the MIDI is the score the separation models learn from.

:func:`draw_chain` draws an :class:`EffectChain` (plain numbers, recorded in the track's
metadata), :func:`apply_chain` runs it. The same chain and input give the same output bits
(pedalboard's plugins are deterministic with ``reset=True``; the pedalboard version is part
of the corpus settings, like the FluidSynth version).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

# The level a stem is brought to before the chain, so that the drawn drive and compressor
# thresholds act the same on a soft and a loud render: the raw render's peak goes here.
INPUT_PEAK_DB = -6.0
DRY_UNITY = 0.5  # pedalboard.Reverb's dry_level that passes the dry signal at unit gain


class EffectsError(RuntimeError):
    """A chain produced unusable audio (non-finite samples) or got bad input."""


@dataclass(frozen=True)
class Eq:
    """Three-band EQ: low shelf, one peak, high shelf (RBJ biquads, gains in dB)."""

    low_shelf_hz: float
    low_shelf_db: float
    peak_hz: float
    peak_db: float
    peak_q: float
    high_shelf_hz: float
    high_shelf_db: float


@dataclass(frozen=True)
class Compression:
    """Feed-forward compressor. Threshold in dBFS; stems enter the chain peaking at -6 dBFS."""

    threshold_db: float
    ratio: float
    attack_ms: float
    release_ms: float


@dataclass(frozen=True)
class ChorusSettings:
    """pedalboard.Chorus: LFO rate, modulation depth, centre delay and wet/dry mix."""

    rate_hz: float
    depth: float
    centre_delay_ms: float
    mix: float


@dataclass(frozen=True)
class ReverbSettings:
    """pedalboard.Reverb (Freeverb-style): room size, damping and wet level; dry at unity."""

    room_size: float
    damping: float
    wet_level: float


@dataclass(frozen=True)
class EffectChain:
    """One stem's drawn channel strip. ``drive_db``/``chorus`` are None when not used."""

    drive_db: float | None
    eq: Eq
    compression: Compression
    chorus: ChorusSettings | None
    reverb: ReverbSettings

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (for metadata.yaml): every parameter that :func:`apply_chain` uses."""
        return asdict(self)


@dataclass(frozen=True)
class RoleRanges:
    """What a role's chain may draw: chorus probability, reverb wet range, drive range."""

    chorus_probability: float
    reverb_wet: tuple[float, float]
    drive_db: tuple[float, float] | None = None


# Per role: bass stays nearly dry and mono-centred as mixes usually keep it; drums get little
# room and no chorus; guitars get drive on top of their (already distorted) patches.
ROLE_RANGES: dict[str, RoleRanges] = {
    "piano": RoleRanges(chorus_probability=0.2, reverb_wet=(0.03, 0.15)),
    "guitar": RoleRanges(chorus_probability=0.35, reverb_wet=(0.03, 0.15), drive_db=(3.0, 15.0)),
    "bass": RoleRanges(chorus_probability=0.1, reverb_wet=(0.0, 0.04)),
    "drums": RoleRanges(chorus_probability=0.0, reverb_wet=(0.02, 0.10)),
    "other": RoleRanges(chorus_probability=0.4, reverb_wet=(0.05, 0.18)),
}
# Ranges shared by every role (EQ, compressor, chorus and reverb shape).
COMMON_RANGES: dict[str, tuple[float, float]] = {
    "low_shelf_hz": (80.0, 250.0), "low_shelf_db": (-4.0, 4.0),
    "peak_hz": (300.0, 4000.0), "peak_db": (-5.0, 5.0), "peak_q": (0.5, 2.0),
    "high_shelf_hz": (3000.0, 10000.0), "high_shelf_db": (-6.0, 4.0),
    "threshold_db": (-24.0, -8.0), "ratio": (1.5, 4.0),
    "attack_ms": (2.0, 30.0), "release_ms": (50.0, 300.0),
    "chorus_rate_hz": (0.3, 2.0), "chorus_depth": (0.1, 0.4),
    "chorus_centre_delay_ms": (5.0, 12.0), "chorus_mix": (0.2, 0.5),
    "room_size": (0.15, 0.6), "damping": (0.3, 0.8),
}


def effects_settings() -> dict[str, Any]:
    """Everything that shapes the drawn chains, for the corpus settings file.

    A corpus rendered with other ranges is a different corpus; recording them makes a rerun
    with changed ranges refuse the old folder instead of mixing the two.
    """
    return {"input_peak_db": INPUT_PEAK_DB,
            "order": ["drive", "eq", "compression", "chorus", "reverb"],
            "common": {k: list(v) for k, v in COMMON_RANGES.items()},
            "roles": {role: asdict(r) for role, r in ROLE_RANGES.items()}}


def _uniform(rng: np.random.Generator, key: str) -> float:
    low, high = COMMON_RANGES[key]
    return float(rng.uniform(low, high))


def _log_uniform(rng: np.random.Generator, key: str) -> float:
    """Frequencies and time constants: uniform on a log scale (as one hears them)."""
    low, high = COMMON_RANGES[key]
    return float(np.exp(rng.uniform(np.log(low), np.log(high))))


def draw_chain(rng: np.random.Generator, role: str) -> EffectChain:
    """Draw one stem's chain for a part of ``role`` ("piano", "guitar", "bass", "drums", "other").

    Values are rounded to three decimals as drawn, so the chain recorded in metadata.yaml is
    exactly the chain applied. The number of draws depends only on the role and on the
    chorus coin, so a given (seed, track) always gives the same chains.

    Raises:
        EffectsError: unknown role.
    """
    if role not in ROLE_RANGES:
        raise EffectsError(f"no effects ranges for role {role!r}; known: {', '.join(ROLE_RANGES)}")
    ranges = ROLE_RANGES[role]

    def r(value: float) -> float:
        return round(value, 3)

    drive = (r(float(rng.uniform(*ranges.drive_db))) if ranges.drive_db is not None else None)
    eq = Eq(low_shelf_hz=r(_log_uniform(rng, "low_shelf_hz")),
            low_shelf_db=r(_uniform(rng, "low_shelf_db")),
            peak_hz=r(_log_uniform(rng, "peak_hz")), peak_db=r(_uniform(rng, "peak_db")),
            peak_q=r(_log_uniform(rng, "peak_q")),
            high_shelf_hz=r(_log_uniform(rng, "high_shelf_hz")),
            high_shelf_db=r(_uniform(rng, "high_shelf_db")))
    compression = Compression(threshold_db=r(_uniform(rng, "threshold_db")),
                              ratio=r(_uniform(rng, "ratio")),
                              attack_ms=r(_log_uniform(rng, "attack_ms")),
                              release_ms=r(_log_uniform(rng, "release_ms")))
    chorus = None
    if rng.uniform() < ranges.chorus_probability:
        chorus = ChorusSettings(rate_hz=r(_log_uniform(rng, "chorus_rate_hz")),
                                depth=r(_uniform(rng, "chorus_depth")),
                                centre_delay_ms=r(_uniform(rng, "chorus_centre_delay_ms")),
                                mix=r(_uniform(rng, "chorus_mix")))
    reverb = ReverbSettings(room_size=r(_uniform(rng, "room_size")),
                            damping=r(_uniform(rng, "damping")),
                            wet_level=r(float(rng.uniform(*ranges.reverb_wet))))
    return EffectChain(drive, eq, compression, chorus, reverb)


def build_board(chain: EffectChain) -> Any:
    """The ``pedalboard.Pedalboard`` for ``chain`` (plugins in the order of the module doc)."""
    import pedalboard as pb

    plugins: list[Any] = []
    if chain.drive_db is not None:
        plugins.append(pb.Distortion(drive_db=chain.drive_db))
    eq = chain.eq
    plugins += [pb.LowShelfFilter(cutoff_frequency_hz=eq.low_shelf_hz, gain_db=eq.low_shelf_db),
                pb.PeakFilter(cutoff_frequency_hz=eq.peak_hz, gain_db=eq.peak_db, q=eq.peak_q),
                pb.HighShelfFilter(cutoff_frequency_hz=eq.high_shelf_hz,
                                   gain_db=eq.high_shelf_db)]
    c = chain.compression
    plugins.append(pb.Compressor(threshold_db=c.threshold_db, ratio=c.ratio,
                                 attack_ms=c.attack_ms, release_ms=c.release_ms))
    if chain.chorus is not None:
        ch = chain.chorus
        plugins.append(pb.Chorus(rate_hz=ch.rate_hz, depth=ch.depth,
                                 centre_delay_ms=ch.centre_delay_ms, feedback=0.0, mix=ch.mix))
    rv = chain.reverb
    plugins.append(pb.Reverb(room_size=rv.room_size, damping=rv.damping,
                             wet_level=rv.wet_level, dry_level=DRY_UNITY, width=1.0))
    return pb.Pedalboard(plugins)


def apply_chain(chain: EffectChain, audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """Run ``chain`` over a mono stem; return float32 of the same length.

    The stem is first scaled so that its peak sits at ``INPUT_PEAK_DB``: FluidSynth renders
    come out at whatever level the patch and velocities give, and the drawn drive and
    compressor threshold should mean the same on every stem. The output is left at the
    level the chain gives it; loudness normalisation follows in the mix, so it need not be
    scaled back. Silence passes through unchanged. Samples are float, never clipped here.

    Raises:
        EffectsError: input not 1-D or not finite, or the chain produced non-finite samples.
    """
    x = np.asarray(audio, dtype=np.float32)
    if x.ndim != 1:
        raise EffectsError(f"apply_chain takes mono audio [n], got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise EffectsError("apply_chain: input has non-finite samples")
    peak = float(np.abs(x).max()) if x.size else 0.0
    if peak == 0.0:
        return x.copy()
    gain = 10 ** (INPUT_PEAK_DB / 20) / peak
    y = build_board(chain)((x * np.float32(gain))[None, :], float(sample_rate), reset=True)[0]
    if y.shape != x.shape or not np.all(np.isfinite(y)):
        raise EffectsError(f"effects chain {chain} gave non-finite or misshapen output")
    return np.ascontiguousarray(y, dtype=np.float32)
