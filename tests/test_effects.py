"""The per-stem effects chains (prep/effects.py) and a corpus rendered with them.

The unit checks use synthetic signals. The corpus checks render a tiny corpus with bench's
soundfont pool and effects twice and read it back as tests/test_synth.py reads the dry one:
Slakh's metadata, loudness, mixing, note alignment, and byte-identical reruns.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from test_synth import (
    check_alignment,
    check_loudness_normalised,
    check_mix_and_peaks,
    metadata,
    rendered,
)

from prep.effects import (
    ROLE_RANGES,
    ChorusSettings,
    EffectChain,
    EffectsError,
    apply_chain,
    draw_chain,
    effects_settings,
)
from prep.synth import RENDER_KEY, SYNTH_PRESETS, synth_slakh

SR = 44100
ROLES = ("piano", "guitar", "bass", "drums", "other")


def tone(seconds: float = 2.0) -> np.ndarray:
    """A decaying 220 Hz tone with harmonics, then silence: a plucked note."""
    t = np.arange(round(seconds * SR)) / SR
    x = sum(np.sin(2 * np.pi * 220 * k * t) / k for k in range(1, 6)) * np.exp(-3 * t)
    x[round(seconds * SR * 0.6) :] = 0
    return (0.2 * x).astype(np.float32)


def test_draw_is_seeded_and_per_role() -> None:
    for role in ROLES:
        a = draw_chain(np.random.default_rng([3, 7]), role)
        assert a == draw_chain(np.random.default_rng([3, 7]), role)
        assert (a.drive_db is not None) == (role == "guitar")
        low, high = ROLE_RANGES[role].reverb_wet
        assert low <= a.reverb.wet_level <= high <= 0.2  # moderate: notes stay aligned
    chains = [draw_chain(np.random.default_rng(i), "other") for i in range(200)]
    assert len({c.eq.peak_hz for c in chains}) == 200  # parameters vary per draw
    with_chorus = sum(c.chorus is not None for c in chains) / len(chains)
    assert abs(with_chorus - ROLE_RANGES["other"].chorus_probability) < 0.12
    assert all(c.chorus is None for c in (draw_chain(np.random.default_rng(i), "drums")
                                          for i in range(50)))
    with pytest.raises(EffectsError, match="fx"):
        draw_chain(np.random.default_rng(0), "fx")


def test_chain_to_dict_records_every_parameter() -> None:
    chain = draw_chain(np.random.default_rng(1), "guitar")
    recorded = chain.to_dict()
    assert set(recorded) == {"drive_db", "eq", "compression", "chorus", "reverb"}
    assert json.loads(json.dumps(recorded)) == recorded  # plain numbers, YAML/JSON safe
    json.dumps(effects_settings())


def test_apply_is_deterministic_finite_and_same_length() -> None:
    x = tone()
    for role in ROLES:
        chain = draw_chain(np.random.default_rng(5), role)
        y = apply_chain(chain, x, SR)
        assert y.dtype == np.float32 and y.shape == x.shape
        assert np.all(np.isfinite(y))
        assert y.tobytes() == apply_chain(chain, x, SR).tobytes()


def test_apply_changes_the_sound_but_not_the_timing() -> None:
    """The effected stem differs from the dry one, and it is silent again soon after the dry
    one is: the reverb tail decays by 40 dB within 0.8 s."""
    x = tone(3.0)
    chain = draw_chain(np.random.default_rng(2), "other")
    chain = replace(chain, reverb=replace(chain.reverb, room_size=0.6, wet_level=0.18))
    y = apply_chain(chain, x, SR)
    scale = np.abs(y).max() / np.abs(x).max()
    assert not np.allclose(y, x * scale, atol=1e-3)
    end = round(1.8 * SR)  # where the dry tone stops
    during = np.sqrt(np.mean(y[end - SR // 2 : end] ** 2))
    later = np.sqrt(np.mean(y[end + round(0.8 * SR) :] ** 2))
    assert later < 0.01 * during


def test_drive_saturates_and_chorus_is_applied() -> None:
    x = tone()
    base = draw_chain(np.random.default_rng(4), "guitar")
    soft = replace(base, drive_db=1.0, chorus=None)
    hard = replace(base, drive_db=30.0, chorus=None)
    crest = [float(np.abs(y).max() / np.sqrt(np.mean(y**2))) for y in
             (apply_chain(soft, x, SR), apply_chain(hard, x, SR))]
    assert crest[1] < crest[0]  # driven harder: flatter peaks
    chorus = replace(soft, chorus=ChorusSettings(rate_hz=1.0, depth=0.3, centre_delay_ms=8.0,
                                                 mix=0.5))
    assert not np.allclose(apply_chain(chorus, x, SR), apply_chain(soft, x, SR), atol=1e-4)


def test_bad_input_is_refused_and_silence_passes() -> None:
    chain: EffectChain = draw_chain(np.random.default_rng(0), "piano")
    with pytest.raises(EffectsError, match="mono"):
        apply_chain(chain, np.zeros((2, 100), np.float32), SR)
    bad = tone()
    bad[10] = np.nan
    with pytest.raises(EffectsError, match="non-finite"):
        apply_chain(chain, bad, SR)
    silence = np.zeros(SR, np.float32)
    assert np.array_equal(apply_chain(chain, silence, SR), silence)


# --- a corpus with bench's pool and effects -------------------------------------------------

# The tiny preset's tracks: the same music as tests/test_synth.py's dry corpus.
TRACKS, SECONDS = SYNTH_PRESETS["tiny"].tracks, SYNTH_PRESETS["tiny"].seconds


@pytest.fixture(scope="module")
def effected(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path]]:
    bench = SYNTH_PRESETS["bench"]
    out = tmp_path_factory.mktemp("effects") / "corpus"
    dirs = synth_slakh(out, TRACKS, SECONDS, bench.seed, workers=2, progress=False,
                       soundfonts=bench.soundfonts, effects=True)
    return out, dirs


def tree_hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_effects_corpus_is_byte_identical_when_rendered_again(
        effected: tuple[Path, list[Path]], tmp_path: Path) -> None:
    """In this process (torch loaded, OpenMP free to use every core) as in joblib's
    one-thread workers of the fixture: the same bytes (prep/synth.py, "Deterministic")."""
    bench = SYNTH_PRESETS["bench"]
    again = tmp_path / "again"
    synth_slakh(again, TRACKS, SECONDS, bench.seed, workers=1, progress=False,
                soundfonts=bench.soundfonts, effects=True)
    assert tree_hashes(again) == tree_hashes(effected[0])


def test_effects_corpus_records_its_render(effected: tuple[Path, list[Path]]) -> None:
    out, dirs = effected
    config = json.loads((out / "synth_slakh.json").read_text())
    pool = [p.name for p in SYNTH_PRESETS["bench"].soundfonts]
    assert config["soundfonts"] == pool
    assert config["effects"] == json.loads(json.dumps(effects_settings()))
    assert config["pedalboard"] and config["fluidsynth"] and "K-weighted" in config["loudness"]
    used = set()
    for track in dirs:
        for stem in rendered(metadata(track)).values():
            render = stem[RENDER_KEY]
            assert render["soundfont"] in pool
            used.add(render["soundfont"])
            assert (render["effects"]["drive_db"] is not None) == (
                stem["program_num"] in (29, 30))  # guitars, and only they, get drive
    assert len(used) >= 2  # stems draw their font from the pool


def test_effects_corpus_is_mixed_as_slakh(effected: tuple[Path, list[Path]]) -> None:
    for track in effected[1]:
        check_mix_and_peaks(track)
        check_loudness_normalised(track)


def test_effects_keep_notes_aligned_with_midi(effected: tuple[Path, list[Path]]) -> None:
    """The dry corpus's alignment check holds with reverb and the rest on (at 20x, ~26 dB,
    instead of 30x between sounding frames and frames far from any note)."""
    checked = check_alignment(effected[1], quiet_ratio=20.0)
    assert checked["pitched"] >= 1 and checked["drums"] == len(effected[1])
