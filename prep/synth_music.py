"""Pop/rock MIDI generator for the demo corpus (rendered to audio by :mod:`prep.synth`).

Every track is composed from one ``numpy.random.Generator``: a tempo (70-160 BPM, 4/4), a key
(major or natural minor), a song form (intro/verse/chorus/bridge/outro, 2-4 bars each), one
diatonic chord progression per section type, and then one part per stem:

* acoustic piano (GM 0/1): block voicings, comping rhythms, arpeggios, a melody over chords;
* distorted guitar (GM 29/30): power-chord chugs, held power chords or a pentatonic riff, only
  in some chorus/bridge bars so that it sounds in roughly a sixth to a third of the song;
* electric bass (GM 33/34): roots in eighths, root-fifth, syncopated, walking lines, E1-G3;
* drums (channel 10): rock, half-time, four-on-the-floor and ride grooves, fills, crashes;
* one or two non-target pitched parts: string/choir/synth pads, organ comping, brass stabs.

Times are kept on a 16th-note grid (``STEPS_PER_BAR`` steps per bar) until
:meth:`Part.to_instrument` converts them to seconds. Target-class notes stay within MIDI
21-108 (the 88 piano keys the transcriptor predicts); :func:`arrange` checks it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pretty_midi

STEPS_PER_BAR = 16  # 16th notes in a 4/4 bar
MIDI_LOW, MIDI_HIGH = 21, 108  # the piano-roll range of the targets (prep.features)
TAIL_S = 0.25  # notes end this long before the audio ends, so releases are mostly heard

MAJOR_SCALE = (0, 2, 4, 5, 7, 9, 11)
MINOR_SCALE = (0, 2, 3, 5, 7, 8, 10)  # natural minor
# Four-chord progressions as 0-based scale degrees (I-V-vi-IV is (0, 4, 5, 3)).
MAJOR_PROGRESSIONS = ((0, 4, 5, 3), (5, 3, 0, 4), (0, 3, 4, 3), (0, 5, 3, 4), (1, 4, 0, 0),
                      (0, 3, 0, 4), (3, 0, 4, 5), (0, 2, 3, 4))
MINOR_PROGRESSIONS = ((0, 5, 2, 6), (0, 3, 4, 0), (0, 6, 5, 6), (0, 5, 3, 4), (0, 3, 6, 2),
                      (5, 6, 0, 0))
SONG_FORMS = (
    ("intro", "verse", "chorus", "verse", "chorus", "bridge", "chorus", "outro"),
    ("verse", "chorus", "verse", "chorus", "bridge", "chorus", "chorus", "outro"),
    ("intro", "verse", "verse", "chorus", "bridge", "chorus", "outro"),
    ("intro", "chorus", "verse", "chorus", "bridge", "verse", "chorus", "outro"),
)
SECTION_BARS = {"intro": 2, "verse": 4, "chorus": 4, "bridge": 4, "outro": 2}

# General MIDI programs (0-based) per role. Targets vary their timbre between two programs.
TARGET_PROGRAMS = {"piano": (0, 1), "guitar": (29, 30), "bass": (33, 34)}
TARGET_ROLES = ("piano", "guitar", "bass")
DRUM_PROGRAM = 128  # Slakh's program_num for drum stems (MIDI program 0 on channel 10)
# Non-target pitched parts: style -> GM programs (no Piano, Guitar or Bass class among them).
OTHER_PROGRAMS = {
    "pad": (48, 49, 50, 52, 89),  # string ensembles, synth strings, choir, warm pad
    "organ": (16, 17, 19),  # drawbar, percussive, church organ
    "stabs": (61, 62, 81),  # brass section, synth brass, saw lead
}
SOUND_EFFECTS_PROGRAM = 103  # FX 8 (sci-fi): the never-rendered stem, like Slakh's S06

# General MIDI percussion keys (channel 10).
KICK, SNARE, CLOSED_HAT, OPEN_HAT, CRASH, RIDE = 36, 38, 42, 46, 49, 51
TOMS = (50, 48, 47, 45, 43)  # high to low


@dataclass(frozen=True)
class Chord:
    """A diatonic triad: ``root`` and ``tones`` (root, third, fifth) are pitch classes 0-11."""

    root: int
    tones: tuple[int, int, int]


@dataclass(frozen=True)
class Bar:
    """One 4/4 bar: its section type and the chords of its first and second half."""

    section: str
    first: Chord
    second: Chord

    def chord_at(self, step: float) -> Chord:
        """The chord sounding at ``step`` (0-15) of this bar."""
        return self.first if step < STEPS_PER_BAR // 2 else self.second


@dataclass(frozen=True)
class Song:
    """The shared musical plan of one track: tempo, key and the chords bar by bar."""

    tempo: int  # BPM, quarter note
    tonic: int  # pitch class
    minor: bool
    bars: tuple[Bar, ...]
    seconds: float  # length of the rendered audio

    @property
    def step_s(self) -> float:
        """Duration of one 16th-note step in seconds."""
        return 60.0 / self.tempo / 4.0

    @property
    def scale(self) -> tuple[int, ...]:
        """Pitch classes of the key's scale, tonic first."""
        return tuple((self.tonic + s) % 12 for s in (MINOR_SCALE if self.minor else MAJOR_SCALE))

    def sections(self) -> list[tuple[str, int, int]]:
        """Consecutive sections as (type, first bar, number of bars)."""
        out: list[tuple[str, int, int]] = []
        for i, bar in enumerate(self.bars):
            if out and out[-1][0] == bar.section and out[-1][1] + out[-1][2] == i and (
                    out[-1][2] < SECTION_BARS[bar.section]):
                out[-1] = (bar.section, out[-1][1], out[-1][2] + 1)
            else:
                out.append((bar.section, i, 1))
        return out


@dataclass
class Part:
    """One stem's notes. ``notes`` are (pitch, start step, length in steps, velocity)."""

    role: str  # "piano", "guitar", "bass", "drums", "other" or "fx"
    program: int  # 0-based GM program; DRUM_PROGRAM for drums
    notes: list[tuple[int, float, float, int]] = field(default_factory=list)

    @property
    def is_drum(self) -> bool:
        return self.program == DRUM_PROGRAM

    def add(self, pitch: int, start: float, length: float, velocity: float) -> None:
        self.notes.append((int(pitch), float(start), float(length),
                           int(np.clip(round(velocity), 1, 127))))

    def to_instrument(self, song: Song, name: str) -> pretty_midi.Instrument:
        """Convert to a pretty_midi instrument in seconds, cut to the song's length.

        Notes starting after ``song.seconds - TAIL_S`` are dropped, later ends are cut there,
        and a note of the same pitch is ended where the next one starts (a MIDI note-off
        would otherwise silence the second one).
        """
        end_s = song.seconds - TAIL_S
        inst = pretty_midi.Instrument(program=0 if self.is_drum else self.program,
                                      is_drum=self.is_drum, name=name)
        by_pitch: dict[int, list[tuple[float, float, int]]] = {}
        for pitch, start, length, velocity in self.notes:
            by_pitch.setdefault(pitch, []).append((start, start + length, velocity))
        notes: list[pretty_midi.Note] = []
        for pitch, spans in by_pitch.items():
            spans.sort()
            for i, (start, stop, velocity) in enumerate(spans):
                if i + 1 < len(spans):
                    stop = min(stop, spans[i + 1][0])
                start_s, stop_s = start * song.step_s, min(stop * song.step_s, end_s)
                if stop_s - start_s >= 0.02:  # shorter than ~1 frame: not a playable note
                    notes.append(pretty_midi.Note(velocity, pitch, start_s, stop_s))
        inst.notes = sorted(notes, key=lambda n: (n.start, n.pitch))
        return inst


def place(pitch_class: int, low: int) -> int:
    """The lowest MIDI pitch >= ``low`` with the given pitch class."""
    return low + (pitch_class - low) % 12


def compose_song(rng: np.random.Generator, seconds: float) -> Song:
    """Draw tempo, key, form and progressions, and lay the chords out bar by bar."""
    tempo = int(rng.integers(70, 161))
    tonic = int(rng.integers(0, 12))
    minor = bool(rng.random() < 0.4)
    scale = MINOR_SCALE if minor else MAJOR_SCALE
    progressions = MINOR_PROGRESSIONS if minor else MAJOR_PROGRESSIONS

    def triad(degree: int) -> Chord:
        tones = tuple((tonic + scale[(degree + k) % 7]) % 12 for k in (0, 2, 4))
        return Chord(tones[0], tones)  # type: ignore[arg-type]

    section_types = ("intro", "verse", "chorus", "bridge", "outro")
    chosen = rng.choice(len(progressions), size=len(section_types))
    progression = {s: progressions[int(i)] for s, i in zip(section_types, chosen, strict=True)}
    progression["intro"] = progression["verse"]
    progression["outro"] = progression["chorus"]
    two_per_bar = {s: bool(rng.random() < 0.25) for s in section_types}  # faster harmony

    bar_s = 4 * 60.0 / tempo
    n_bars = max(1, math.ceil(seconds / bar_s))
    form = SONG_FORMS[int(rng.integers(len(SONG_FORMS)))]
    if n_bars < 8:  # short clips: start in the verse, no quiet intro
        form = tuple(s for s in form if s not in ("intro", "outro"))
    bars: list[Bar] = []
    while len(bars) < n_bars:
        for section in form:
            degrees = progression[section]
            for b in range(SECTION_BARS[section]):
                if two_per_bar[section]:
                    first, second = degrees[(2 * b) % 4], degrees[(2 * b + 1) % 4]
                else:
                    first = second = degrees[b % 4]
                bars.append(Bar(section, triad(first), triad(second)))
    return Song(tempo, tonic, minor, tuple(bars[:n_bars]), float(seconds))


# --- parts ---------------------------------------------------------------------------------

def _velocity(rng: np.random.Generator, base: float, step: float) -> float:
    """Base velocity, accented on beats, with a little human variation."""
    accent = 8 if step % 8 == 0 else 4 if step % 4 == 0 else 0
    return base + accent + rng.normal(0.0, 5.0)


def may_rest(rng: np.random.Generator, sections: list[tuple[str, int, int]], section: str,
             probability: float) -> bool:
    """Whether a part rests for a section: never in a chorus or in songs of < 3 sections."""
    return section != "chorus" and len(sections) >= 3 and bool(rng.random() < probability)


def _voicing(chord: Chord, center: int) -> list[int]:
    """Close-position triad with every tone in [center - 6, center + 6)."""
    return sorted(place(pc, center - 6) for pc in chord.tones)


COMP_RHYTHMS = ((0, 6, 8, 14), (0, 3, 6, 8, 11, 14), (0, 4, 8, 12), (2, 6, 10, 14))
MELODY_RHYTHMS = ((4, 4, 4, 4), (2, 2, 4, 8), (6, 2, 4, 4), (4, 2, 2, 8), (8, 8), (3, 3, 2, 8),
                  (2, 2, 2, 2, 4, 4))


def piano_part(rng: np.random.Generator, song: Song, program: int,
               melody_only: bool = False) -> Part:
    """Acoustic piano: per section one of block chords, comping, arpeggios, melody + chords."""
    part = Part("piano", program)
    center = 62 + int(rng.integers(-3, 4))
    base = float(rng.uniform(70, 90))
    styles = ("block", "comp", "arpeggio", "melody")
    style_of = {s: styles[int(rng.integers(len(styles)))] for s in SECTION_BARS}
    style_of["outro"] = "block"
    if melody_only:
        style_of = dict.fromkeys(SECTION_BARS, "melody")
    comp = COMP_RHYTHMS[int(rng.integers(len(COMP_RHYTHMS)))]
    melody_pitch = place(song.tonic, 67)
    scale_pitches = [p for p in range(55, 90) if p % 12 in song.scale]
    sections = song.sections()
    for section, first_bar, n in sections:
        if not melody_only and may_rest(rng, sections, section, 0.1):
            continue  # the piano sits this section out
        style = style_of[section]
        for b in range(first_bar, first_bar + n):
            bar, t0 = song.bars[b], b * STEPS_PER_BAR
            if style in ("block", "melody") and not melody_only:
                low = center - 7 if style == "melody" else center
                for half in (0, 8):
                    chord = bar.chord_at(half)
                    for p in _voicing(chord, low):
                        part.add(p, t0 + half, 7.6, _velocity(rng, base - 8, half))
                    part.add(place(chord.root, 36), t0 + half, 7.6, _velocity(rng, base - 5, half))
            if style == "comp":
                onsets = (*comp, STEPS_PER_BAR)
                for on, nxt in zip(onsets[:-1], onsets[1:], strict=True):
                    for p in _voicing(bar.chord_at(on), center):
                        part.add(p, t0 + on, (nxt - on) * 0.9, _velocity(rng, base, on))
                part.add(place(bar.first.root, 36), t0, 15.0, _velocity(rng, base - 5, 0))
            elif style == "arpeggio":
                for k, step in enumerate(range(0, STEPS_PER_BAR, 2)):
                    chord = bar.chord_at(step)
                    ladder = sorted(place(pc, 48) for pc in chord.tones)
                    ladder = ladder + [p + 12 for p in ladder] + [ladder[0] + 24]
                    idx = (0, 1, 2, 3, 4, 3, 2, 1)[k]  # up and back down
                    part.add(ladder[idx], t0 + step, 2.8, _velocity(rng, base - 6, step))
            elif style == "melody":
                rhythm = MELODY_RHYTHMS[int(rng.integers(len(MELODY_RHYTHMS)))]
                step = 0
                for length in rhythm:
                    if rng.random() < 0.15:  # rest
                        step += length
                        continue
                    move = int(rng.choice((-2, -1, -1, 0, 1, 1, 2)))
                    i = int(np.clip(scale_pitches.index(melody_pitch) + move, 0,
                                    len(scale_pitches) - 1))
                    pitch = scale_pitches[i]
                    if step % 4 == 0:  # strong beats land on a chord tone
                        tones = [p for p in scale_pitches if p % 12 in bar.chord_at(step).tones]
                        pitch = min(tones, key=lambda p, q=pitch: (abs(p - q), p))
                    melody_pitch = int(np.clip(pitch, 64, 86))
                    if melody_pitch not in scale_pitches:
                        melody_pitch = min(scale_pitches, key=lambda p: abs(p - melody_pitch))
                    part.add(melody_pitch, t0 + step, length * 0.95,
                             _velocity(rng, base + 5, step))
                    step += length
    return part


def guitar_bars(rng: np.random.Generator, song: Song) -> list[int]:
    """Bars the distorted guitar plays: chorus (then bridge) sections up to a drawn share.

    The share of bars is drawn in [1/6, 1/3] and divided by the expected duty cycle of the
    riffs, so the guitar sounds in roughly a sixth to a third of the frames.
    """
    n_bars = len(song.bars)
    wanted = max(1, round(float(rng.uniform(1 / 6, 1 / 3)) / 0.85 * n_bars))
    sections = song.sections()
    order = ([s for s in sections if s[0] == "chorus"] + [s for s in sections if s[0] == "bridge"]
             + [s for s in sections if s[0] not in ("chorus", "bridge")])
    bars: list[int] = []
    for _, first, n in order:
        bars.extend(range(first, first + min(n, wanted - len(bars))))
        if len(bars) >= wanted:
            break
    return sorted(bars)


RIFF_RHYTHMS = ((0, 2, 3, 6, 8, 10, 11, 14), (0, 3, 6, 8, 10, 12, 14), (0, 2, 4, 6, 8, 11, 14))


def guitar_part(rng: np.random.Generator, song: Song, program: int, bars: list[int],
                lead: bool = False) -> Part:
    """Distorted electric guitar over ``bars``: power chords (chugs or held) or a riff."""
    part = Part("guitar", program)
    base = float(rng.uniform(80, 100))
    styles = ("chug", "held", "riff")
    style = "riff" if lead else styles[int(rng.integers(len(styles)))]
    pentatonic = (0, 3, 5, 7, 10, 12, 15)  # minor pentatonic over the chord root
    riff_rhythm = RIFF_RHYTHMS[int(rng.integers(len(RIFF_RHYTHMS)))]
    riff_degrees = rng.integers(0, len(pentatonic), size=len(riff_rhythm))
    riff_low = 52 if lead else 40
    for b in bars:
        bar, t0 = song.bars[b], b * STEPS_PER_BAR
        if style == "riff":
            onsets = (*riff_rhythm, STEPS_PER_BAR)
            for k, (on, nxt) in enumerate(zip(onsets[:-1], onsets[1:], strict=True)):
                root = place(bar.chord_at(on).root, riff_low)
                pitch = root + pentatonic[int(riff_degrees[k])]
                part.add(pitch, t0 + on, (nxt - on) * 0.85, _velocity(rng, base, on))
            continue
        step_len = 2 if style == "chug" else 8
        for step in range(0, STEPS_PER_BAR, step_len):
            root = place(bar.chord_at(step).root, 40)  # E2..D#3: power chords on low strings
            for p in (root, root + 7, root + 12):
                part.add(p, t0 + step, step_len * 0.85, _velocity(rng, base, step))
    return part


def bass_part(rng: np.random.Generator, song: Song, program: int, sparse: bool = False) -> Part:
    """Electric bass in E1-G3: root eighths, root-fifth, syncopated or walking, per section."""
    part = Part("bass", program)
    base = float(rng.uniform(85, 105))
    styles = ("root8", "rootfifth", "sync", "walking")
    style_of = {s: styles[int(rng.integers(len(styles)))] for s in SECTION_BARS}
    scale_low = sorted(p for p in range(28, 56) if p % 12 in song.scale)
    for section, first_bar, n in song.sections():
        if section == "intro" and rng.random() < 0.5:
            continue
        style = "whole" if sparse else style_of[section]
        for b in range(first_bar, first_bar + n):
            bar, t0 = song.bars[b], b * STEPS_PER_BAR
            if style == "whole":
                for half in (0, 8):
                    part.add(place(bar.chord_at(half).root, 28), t0 + half, 7.5,
                             _velocity(rng, base - 10, half))
            elif style == "root8":
                for step in range(0, STEPS_PER_BAR, 2):
                    root = place(bar.chord_at(step).root, 28)
                    octave = 12 if step in (6, 14) and root + 12 <= 55 else 0
                    part.add(root + octave, t0 + step, 1.7, _velocity(rng, base, step))
            elif style == "rootfifth":
                for step in range(0, STEPS_PER_BAR, 4):
                    root = place(bar.chord_at(step).root, 28)
                    part.add(root + (7 if step in (4, 12) else 0), t0 + step, 3.5,
                             _velocity(rng, base, step))
            elif style == "sync":
                for step in (0, 3, 6, 8, 11, 14):
                    root = place(bar.chord_at(step).root, 28)
                    part.add(root + (7 if step in (6, 14) else 0), t0 + step, 1.8,
                             _velocity(rng, base, step))
            else:  # walking: root, two steps of the scale, chromatic approach to the next root
                root = place(bar.first.root, 28)
                nxt = song.bars[b + 1].first.root if b + 1 < len(song.bars) else song.tonic
                target = place(nxt, 28)
                direction = 1 if rng.random() < 0.5 else -1
                i = scale_low.index(root)
                line = [root, scale_low[min(i + 1, len(scale_low) - 1)],
                        scale_low[min(i + 2, len(scale_low) - 1)],
                        target - direction if 28 < target < 55 else target]
                for k, pitch in enumerate(line):
                    part.add(pitch, t0 + 4 * k, 3.6, _velocity(rng, base, 4 * k))
    return part


DRUM_GROOVES = {
    # groove: (kick steps, snare steps, hat steps, hat key)
    "rock": ((0, 8, 10), (4, 12), tuple(range(0, 16, 2)), CLOSED_HAT),
    "halftime": ((0, 6), (8,), tuple(range(0, 16, 2)), CLOSED_HAT),
    "fourfloor": ((0, 4, 8, 12), (4, 12), (2, 6, 10, 14), OPEN_HAT),
    "ride": ((0, 7, 10), (4, 12), tuple(range(0, 16, 2)), RIDE),
    "hats": ((), (), tuple(range(0, 16, 2)), CLOSED_HAT),
}


def drum_part(rng: np.random.Generator, song: Song) -> Part:
    """Drum kit on channel 10: a groove per section, a fill on its last bar, crash after."""
    part = Part("drums", DRUM_PROGRAM)
    base = float(rng.uniform(85, 105))
    groove_of = {
        "intro": "hats" if rng.random() < 0.6 else "halftime",
        "verse": ("rock", "halftime")[int(rng.integers(2))],
        "chorus": ("rock", "fourfloor")[int(rng.integers(2))],
        "bridge": ("ride", "halftime")[int(rng.integers(2))],
        "outro": "rock",
    }
    for section_index, (section, first_bar, n) in enumerate(song.sections()):
        kicks, snares, hats, hat_key = DRUM_GROOVES[groove_of[section]]
        for b in range(first_bar, first_bar + n):
            t0 = b * STEPS_PER_BAR
            fill = b == first_bar + n - 1 and n > 1 and section != "intro"
            if b == first_bar and section_index > 0 and section != "intro":
                part.add(CRASH, t0, 1, _velocity(rng, base + 5, 0))
            for s in kicks:
                if not (fill and s >= 8):
                    part.add(KICK, t0 + s, 1, _velocity(rng, base, s))
            for s in snares:
                if not (fill and s >= 8):
                    part.add(SNARE, t0 + s, 1, _velocity(rng, base, s))
            for s in hats:
                if not (fill and s >= 8):
                    part.add(hat_key, t0 + s, 1, _velocity(rng, base - 15, s))
            if fill:  # 16th notes down the toms, snare first
                for k, s in enumerate(range(8, 16)):
                    key = SNARE if k < 2 else TOMS[min((k - 2) // 2 + int(rng.integers(0, 2)),
                                                       len(TOMS) - 1)]
                    part.add(key, t0 + s, 1, _velocity(rng, base - 5, s))
    return part


def other_part(rng: np.random.Generator, song: Song, style: str, program: int) -> Part:
    """A non-target pitched part: held pad chords, organ comping or brass/lead stabs."""
    part = Part("other", program)
    base = float(rng.uniform(60, 80))
    sections = song.sections()
    for section, first_bar, n in sections:
        if may_rest(rng, sections, section, 0.35):
            continue
        for b in range(first_bar, first_bar + n):
            bar, t0 = song.bars[b], b * STEPS_PER_BAR
            if style == "pad":
                for half in (0, 8):
                    if half == 8 and bar.second == bar.first:
                        continue
                    chord = bar.chord_at(half)
                    length = 7.8 if bar.second != bar.first else 15.8
                    for p in _voicing(chord, 70):
                        part.add(p, t0 + half, length, _velocity(rng, base, half))
            elif style == "organ":
                for step in (2, 6, 10, 14):  # off-beat chords
                    for p in _voicing(bar.chord_at(step), 64):
                        part.add(p, t0 + step, 1.8, _velocity(rng, base, step))
            else:  # stabs
                for step in (0, 6, 10):
                    for p in _voicing(bar.chord_at(step), 72):
                        part.add(p, t0 + step, 1.5, _velocity(rng, base + 10, step))
    return part


def fx_part(rng: np.random.Generator, song: Song) -> Part:
    """A few sound-effect notes: the stem Slakh lists but never renders (like its S06)."""
    part = Part("fx", SOUND_EFFECTS_PROGRAM)
    for b in range(0, len(song.bars), 2):
        part.add(int(rng.integers(48, 84)), b * STEPS_PER_BAR, 8, 70)
    return part


@dataclass(frozen=True)
class Variant:
    """Which stems a track has beyond the standard piano, guitar, bass, drums and one other.

    Attributes:
        missing: a target role left out entirely, or None.
        doubled: a target role that gets a second stem, or None.
        second_other: add a second non-target pitched part.
        unrendered_fx: add a sound-effects stem that is listed but never rendered.
    """

    missing: str | None = None
    doubled: str | None = None
    second_other: bool = False
    unrendered_fx: bool = False


def draw_variant(rng: np.random.Generator, position: int) -> Variant:
    """The stem line-up of the ``position``-th track of a corpus.

    Fixed positions guarantee that even a six-track corpus has a track without one target
    (position 3, 8, 13, ...), one with two stems of a class (2, 6, 10, ...) and one with an
    unrendered stem (5, 12, 19, ...); the rest is left to chance.
    """
    missing = TARGET_ROLES[int(rng.integers(3))] if (position % 5 == 3
                                                     or rng.random() < 0.05) else None
    doubled = None
    if position % 4 == 2 or rng.random() < 0.1:
        doubled = str(rng.choice([r for r in TARGET_ROLES if r != missing]))
    return Variant(missing=missing, doubled=doubled, second_other=bool(rng.random() < 0.4),
                   unrendered_fx=position % 7 == 5)


def arrange(rng: np.random.Generator, song: Song, variant: Variant) -> list[Part]:
    """All parts of a track, in a random stem order (Slakh's Sxx order carries no meaning).

    Raises:
        ValueError: a target note fell outside MIDI 21-108 (a generator bug).
    """
    def program(role: str) -> int:
        return int(rng.choice(TARGET_PROGRAMS[role]))

    parts: list[Part] = []
    if variant.missing != "piano":
        parts.append(piano_part(rng, song, program("piano")))
        if variant.doubled == "piano":
            parts.append(piano_part(rng, song, program("piano"), melody_only=True))
    if variant.missing != "guitar":
        bars = guitar_bars(rng, song)
        parts.append(guitar_part(rng, song, program("guitar"), bars))
        if variant.doubled == "guitar":
            parts.append(guitar_part(rng, song, program("guitar"), bars, lead=True))
    if variant.missing != "bass":
        parts.append(bass_part(rng, song, program("bass")))
        if variant.doubled == "bass":
            parts.append(bass_part(rng, song, program("bass"), sparse=True))
    parts.append(drum_part(rng, song))
    styles = sorted(OTHER_PROGRAMS)
    for _ in range(2 if variant.second_other else 1):
        style = styles[int(rng.integers(len(styles)))]
        parts.append(other_part(rng, song, style, int(rng.choice(OTHER_PROGRAMS[style]))))
    if variant.unrendered_fx:
        parts.append(fx_part(rng, song))
    for part in parts:
        if part.role in TARGET_ROLES:
            bad = [n[0] for n in part.notes if not MIDI_LOW <= n[0] <= MIDI_HIGH]
            if bad:
                raise ValueError(f"{part.role} notes outside MIDI {MIDI_LOW}-{MIDI_HIGH}: {bad}")
    order = rng.permutation(len(parts))
    return [parts[int(i)] for i in order]
