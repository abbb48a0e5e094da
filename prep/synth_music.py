"""Pop/rock MIDI generator for the demo corpus (rendered to audio by :mod:`prep.synth`).

Every track is composed from one ``numpy.random.Generator``: a tempo (70-160 BPM, 4/4), a key
(major or natural minor), a song form (intro/verse/chorus/bridge/outro, 2-4 bars each), one
diatonic chord progression per section type, then a song-level **arrangement** (which target
instruments play in which sections, :func:`arrange_sections`) and one part per stem:

* acoustic piano (GM 0/1): block voicings, comping rhythms, arpeggios, a melody over chords,
  with the sustain pedal (MIDI CC 64) changed with the chords in most sections;
* distorted guitar (GM 29/30): power-chord chugs, held power chords, a pentatonic riff or a
  slow single-note lead;
* electric bass (GM 33/34): roots in eighths, root-fifth, syncopated, walking lines, E1-G3;
* drums (channel 10): rock, half-time, four-on-the-floor and ride grooves, fills, crashes;
* one or two non-target pitched parts: string/choir/synth pads, organ comping, brass stabs.

Why the arrangement: in Slakh2100 the paper's classes sound in 41 % (piano), 14 % (guitar)
and 67 % (bass) of the training frames (Hung et al., ICASSP 2021), because whole tracks lack
an instrument and instruments drop out for sections. A generator that lets every target play
throughout gives frame and clip activity labels that say little (the first bench corpus had
piano in 88 % of its frames). So each target is left out of a whole track with a
class-specific probability (:func:`draw_variant`), and in a track it plays in the sections
its song-level plan gives it: a probability per section type (guitar mostly in choruses, bass
nearly everywhere but the intro), drawn once per song, varied per section instance
(:data:`SECTION_PLAY_PROBABILITY`). ``prep/music_stats.py`` measures the result against
Slakh (see the data cards' "Music statistics").

Times are kept on a 16th-note grid (``STEPS_PER_BAR`` steps per bar) until
:meth:`Part.to_instrument` converts them to seconds. Target-class notes stay within MIDI
21-108 (the 88 piano keys the transcriptor predicts); :func:`arrange` checks it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
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

# Song-level arrangement: the probability that a target plays in a section type, drawn once
# per song (then scaled by a per-song factor and varied per section instance). Conventions of
# pop/rock arrangements: distorted guitar mostly in choruses and bridges, bass almost always
# but often not in the intro, piano in most sections. Tuned with prep/music_stats.py so that
# the bench corpus's activity comes near Slakh2100's (see the module docstring).
SECTION_PLAY_PROBABILITY: dict[str, dict[str, float]] = {
    "piano": {"intro": 0.5, "verse": 0.65, "chorus": 0.7, "bridge": 0.55, "outro": 0.6},
    "guitar": {"intro": 0.1, "verse": 0.1, "chorus": 0.5, "bridge": 0.35, "outro": 0.2},
    "bass": {"intro": 0.5, "verse": 0.95, "chorus": 1.0, "bridge": 0.85, "outro": 0.85},
}
SONG_FACTOR_RANGE = (0.75, 1.2)  # per-song, per-role scale of those probabilities
SECTION_FLIP_PROBABILITY = 0.12  # a section instance deviates from its type's plan
# Probability that a whole track has no stem of a target (on top of draw_variant's fixed
# positions): Slakh tracks often lack one of the three classes.
TRACK_ABSENCE_PROBABILITY = {"piano": 0.2, "guitar": 0.35, "bass": 0.05}
# Probability that the piano uses the sustain pedal in a section, by style.
PEDAL_PROBABILITY = {"block": 0.75, "comp": 0.25, "arpeggio": 0.9, "melody": 0.8}
PEDAL_DELAY_STEPS = 0.5  # legato pedalling: pressed again a 32nd note after the chord change
SUSTAIN_CONTROL = 64  # MIDI CC number of the sustain pedal

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
    """One stem's notes and sustain pedal.

    ``notes`` are (pitch, start step, length in steps, velocity); ``pedal`` are the
    (down step, up step) intervals in which the sustain pedal is held.
    """

    role: str  # "piano", "guitar", "bass", "drums", "other" or "fx"
    program: int  # 0-based GM program; DRUM_PROGRAM for drums
    notes: list[tuple[int, float, float, int]] = field(default_factory=list)
    pedal: list[tuple[float, float]] = field(default_factory=list)

    @property
    def is_drum(self) -> bool:
        return self.program == DRUM_PROGRAM

    def add(self, pitch: int, start: float, length: float, velocity: float) -> None:
        self.notes.append((int(pitch), float(start), float(length),
                           int(np.clip(round(velocity), 1, 127))))

    def hold_pedal(self, down: float, up: float) -> None:
        """Hold the sustain pedal from step ``down`` to step ``up``."""
        if up > down:
            self.pedal.append((float(down), float(up)))

    def to_instrument(self, song: Song, name: str) -> pretty_midi.Instrument:
        """Convert to a pretty_midi instrument in seconds, cut to the song's length.

        Notes starting after ``song.seconds - TAIL_S`` are dropped, later ends are cut there,
        and a note of the same pitch is ended where the next one starts (a MIDI note-off
        would otherwise silence the second one). Each pedal interval becomes a CC 64 value
        127 (down) and value 0 (up) pair; the pedal is lifted by the same cut-off at the
        latest, and intervals starting after it are dropped.
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
        changes: list[pretty_midi.ControlChange] = []
        for down, up in sorted(self.pedal):
            down_s, up_s = down * song.step_s, min(up * song.step_s, end_s)
            if up_s > down_s:
                changes.append(pretty_midi.ControlChange(SUSTAIN_CONTROL, 127, down_s))
                changes.append(pretty_midi.ControlChange(SUSTAIN_CONTROL, 0, up_s))
        inst.control_changes = changes
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


COMP_RHYTHMS = ((0, 6, 8, 14), (0, 3, 8, 11), (0, 4, 8, 12), (2, 6, 10, 14))
MELODY_RHYTHMS = ((4, 4, 4, 4), (2, 2, 4, 8), (6, 2, 4, 4), (4, 2, 2, 8), (8, 8), (3, 3, 2, 8),
                  (2, 2, 2, 2, 4, 4))


@dataclass(frozen=True)
class Arrangement:
    """Which sections each target role plays in: ``plays[role][k]`` for the k-th section of
    :meth:`Song.sections`."""

    plays: dict[str, tuple[bool, ...]]

    def bars(self, song: Song, role: str) -> list[int]:
        """The bars of the sections ``role`` plays in, in order."""
        return [b for (_, first, n), play in zip(song.sections(), self.plays[role], strict=True)
                if play for b in range(first, first + n)]


def arrange_sections(rng: np.random.Generator, song: Song) -> Arrangement:
    """The song-level arrangement of the target roles (see the module docstring).

    Per role: a song factor in :data:`SONG_FACTOR_RANGE` scales the role's probability for
    each section type (:data:`SECTION_PLAY_PROBABILITY`); one draw per type decides whether
    the role plays in that type's sections, and each section instance flips that decision with
    :data:`SECTION_FLIP_PROBABILITY` (a verse that adds the guitar, a chorus without piano).
    A role that would play nowhere plays in its most likely section, so a track whose
    line-up has the instrument always has notes of it.
    """
    sections = song.sections()
    plays: dict[str, tuple[bool, ...]] = {}
    for role in TARGET_ROLES:
        table = SECTION_PLAY_PROBABILITY[role]
        factor = float(rng.uniform(*SONG_FACTOR_RANGE))
        by_type = {kind: bool(rng.random() < min(1.0, p * factor)) for kind, p in table.items()}
        flags = [by_type[kind] != bool(rng.random() < SECTION_FLIP_PROBABILITY)
                 for kind, _, _ in sections]
        if not any(flags):
            best = max(range(len(sections)), key=lambda k: (table[sections[k][0]], -k))
            flags[best] = True
        plays[role] = tuple(flags)
    return Arrangement(plays)


def _chord_spans(bar: Bar) -> list[tuple[int, int]]:
    """(first step, end step) of each chord of a bar: one span, or two when it changes."""
    if bar.second == bar.first:
        return [(0, STEPS_PER_BAR)]
    half = STEPS_PER_BAR // 2
    return [(0, half), (half, STEPS_PER_BAR)]


def piano_part(rng: np.random.Generator, song: Song, program: int, plays: Sequence[bool],
               melody_only: bool = False) -> Part:
    """Acoustic piano in the sections of ``plays``: per section type one of block chords,
    comping, arpeggios or a melody over chords, pedalled with the chords or not.

    Pedalling is legato, as pianists change it with the harmony: the pedal is lifted at each
    chord change (and bar line) and pressed again :data:`PEDAL_DELAY_STEPS` later, so the
    old chord stops and the new one, still held by the fingers, is caught. Whether a section
    is pedalled depends on its style (:data:`PEDAL_PROBABILITY`) and on how much this player
    pedals at all.
    """
    part = Part("piano", program)
    center = 62 + int(rng.integers(-3, 4))
    base = float(rng.uniform(70, 90))
    styles = ("block", "comp", "arpeggio", "melody")
    style_of = {s: styles[int(rng.integers(len(styles)))] for s in SECTION_BARS}
    style_of["outro"] = "block"
    if melody_only:
        style_of = dict.fromkeys(SECTION_BARS, "melody")
    pedal_habit = float(rng.uniform(0.5, 1.0))
    comp = COMP_RHYTHMS[int(rng.integers(len(COMP_RHYTHMS)))]
    melody_pitch = place(song.tonic, 67)
    scale_pitches = [p for p in range(55, 90) if p % 12 in song.scale]
    for (section, first_bar, n), play in zip(song.sections(), plays, strict=True):
        if not play:
            continue  # the piano sits this section out
        style = style_of[section]
        pedalled = bool(rng.random() < PEDAL_PROBABILITY[style] * pedal_habit)
        restrike = bool(rng.random() < 0.4)  # block chords struck again on beat 3
        left_hand = bool(rng.random() < 0.4)  # a bass note under the block chords
        for b in range(first_bar, first_bar + n):
            bar, t0 = song.bars[b], b * STEPS_PER_BAR
            spans = _chord_spans(bar)
            if pedalled:
                for start, end in spans:
                    part.hold_pedal(t0 + start + PEDAL_DELAY_STEPS, t0 + end)
            if style in ("block", "melody") and not melody_only:
                low = center - 7 if style == "melody" else center
                onsets = [(0, 8), (8, 16)] if restrike and len(spans) == 1 else spans
                for start, end in onsets:
                    chord = bar.chord_at(start)
                    length = end - start - 0.4
                    for p in _voicing(chord, low):
                        part.add(p, t0 + start, length, _velocity(rng, base - 8, start))
                    if left_hand:
                        part.add(place(chord.root, 36), t0 + start, length,
                                 _velocity(rng, base - 5, start))
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


RIFF_RHYTHMS = ((0, 2, 3, 6, 8, 10, 11, 14), (0, 3, 6, 8, 10, 12, 14), (0, 2, 4, 6, 8, 11, 14))
LEAD_RHYTHMS = ((8, 8), (4, 4, 8), (6, 2, 8), (12, 4), (16,))


def guitar_part(rng: np.random.Generator, song: Song, program: int, bars: list[int],
                lead: bool = False) -> Part:
    """Distorted electric guitar over ``bars``: power chords (chugged or held), a riff, or a
    slow single-note lead line (``lead=True``: the riff an octave up, for a second guitar)."""
    part = Part("guitar", program)
    base = float(rng.uniform(80, 100))
    styles = ("chug", "held", "riff", "lead")
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
        if style == "lead":  # long notes from the pentatonic over the chord, bar by bar
            step = 0
            for length in LEAD_RHYTHMS[int(rng.integers(len(LEAD_RHYTHMS)))]:
                root = place(bar.chord_at(step).root, 52)
                pitch = root + pentatonic[int(rng.integers(len(pentatonic)))]
                part.add(pitch, t0 + step, length * 0.95, _velocity(rng, base, step))
                step += length
            continue
        step_len = 2 if style == "chug" else 8
        voicing = (0, 7) if style == "chug" else (0, 7, 12)  # chugs: root and fifth only
        for step in range(0, STEPS_PER_BAR, step_len):
            root = place(bar.chord_at(step).root, 40)  # E2..D#3: power chords on low strings
            for interval in voicing:
                part.add(root + interval, t0 + step, step_len * 0.85,
                         _velocity(rng, base, step))
    return part


def bass_part(rng: np.random.Generator, song: Song, program: int, plays: Sequence[bool],
              sparse: bool = False) -> Part:
    """Electric bass in E1-G3 in the sections of ``plays``: root eighths, root-fifth,
    syncopated or walking per section type (``sparse``: half notes, for a second bass)."""
    part = Part("bass", program)
    base = float(rng.uniform(85, 105))
    styles = ("root8", "rootfifth", "sync", "walking")
    style_of = {s: styles[int(rng.integers(len(styles)))] for s in SECTION_BARS}
    scale_low = sorted(p for p in range(28, 56) if p % 12 in song.scale)
    for (section, first_bar, n), play in zip(song.sections(), plays, strict=True):
        if not play:
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
                onsets = (0, 3, 6, 8, 11, 14, STEPS_PER_BAR)
                for step, nxt in zip(onsets[:-1], onsets[1:], strict=True):
                    root = place(bar.chord_at(step).root, 28)
                    part.add(root + (7 if step in (6, 14) else 0), t0 + step,
                             (nxt - step) * 0.85, _velocity(rng, base, step))
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
    """Which stems a track has beyond drums and one non-target pitched part.

    Attributes:
        missing: target roles left out of the whole track (never all three).
        doubled: a present target role that gets a second stem, or None.
        second_other: add a second non-target pitched part.
        unrendered_fx: add a sound-effects stem that is listed but never rendered.
    """

    missing: tuple[str, ...] = ()
    doubled: str | None = None
    second_other: bool = False
    unrendered_fx: bool = False


def draw_variant(rng: np.random.Generator, position: int) -> Variant:
    """The stem line-up of the ``position``-th track of a corpus.

    Each target is left out with its :data:`TRACK_ABSENCE_PROBABILITY`. Fixed positions
    guarantee that even a six-track corpus has a track without one target (position 3, 8,
    13, ...), one with two stems of a class (2, 6, 10, ...) and one with an unrendered stem
    (5, 12, 19, ...); the rest is left to chance. At least one target always stays.
    """
    forced = TARGET_ROLES[int(rng.integers(3))] if position % 5 == 3 else None
    missing = [role for role in TARGET_ROLES
               if bool(rng.random() < TRACK_ABSENCE_PROBABILITY[role]) or role == forced]
    if len(missing) == len(TARGET_ROLES):
        missing.remove(TARGET_ROLES[int(rng.integers(3))])
    doubled = None
    if position % 4 == 2 or rng.random() < 0.1:
        doubled = str(rng.choice([r for r in TARGET_ROLES if r not in missing]))
    return Variant(missing=tuple(missing), doubled=doubled,
                   second_other=bool(rng.random() < 0.4), unrendered_fx=position % 7 == 5)


def arrange(rng: np.random.Generator, song: Song, variant: Variant) -> list[Part]:
    """All parts of a track, in a random stem order (Slakh's Sxx order carries no meaning).

    The targets follow one song-level :func:`arrange_sections` plan; a second stem of a
    class plays in the same sections as the first.

    Raises:
        ValueError: a target note fell outside MIDI 21-108 (a generator bug).
    """
    def program(role: str) -> int:
        return int(rng.choice(TARGET_PROGRAMS[role]))

    plan = arrange_sections(rng, song)
    parts: list[Part] = []
    if "piano" not in variant.missing:
        parts.append(piano_part(rng, song, program("piano"), plan.plays["piano"]))
        if variant.doubled == "piano":
            parts.append(piano_part(rng, song, program("piano"), plan.plays["piano"],
                                    melody_only=True))
    if "guitar" not in variant.missing:
        bars = plan.bars(song, "guitar")
        parts.append(guitar_part(rng, song, program("guitar"), bars))
        if variant.doubled == "guitar":
            parts.append(guitar_part(rng, song, program("guitar"), bars, lead=True))
    if "bass" not in variant.missing:
        parts.append(bass_part(rng, song, program("bass"), plan.plays["bass"]))
        if variant.doubled == "bass":
            parts.append(bass_part(rng, song, program("bass"), plan.plays["bass"], sparse=True))
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
