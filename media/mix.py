"""The audio mix: voice + music/ambience beds (looped or trimmed, ducked under speech) + SFX.

Done in numpy rather than an ffmpeg graph because the spec is measured: the beds must sit at
exactly `base_volume` under speech and move with exactly the configured attack/release. ffmpeg's
sidechaincompress is a compressor (its gain depends on how loud the voice is over a threshold),
so its ducked level drifts with the voice's level; our ducker is a gate on a voice-activity
envelope with slew-limited gain in dB, which hits the target level whatever the voice level.
Measured on a steady 220 Hz bed with speech-like bursts (base_volume 0.15 = -16.5 dB):
sidechaincompress (threshold 0.02, ratio 8..20, attack 50, release 300) ducked 2.5 dB under a
-35 dBFS voice and 21 dB under a -15 dBFS one; ours ducks 16.5 dB under both.
"""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass

import numpy as np
from scipy.io import wavfile

from media.ffmpeg import MediaError, run
from media.options import Ducking, FinishOptions, SfxTrack

MIX_SAMPLE_RATE = 48000
MIX_CHANNELS = 2
BED_FADE_OUT_S = 0.5          # beds end with a fade, never a cut
SFX_FADE_OUT_S = 0.02         # an SFX cut by the end of the voice fades this fast
LOOP_CROSSFADE_S = 0.05       # equal-power crossfade at each loop seam of a short bed
CONTROL_HOP_MS = 1.0          # the ducker's gain is computed every millisecond
ENVELOPE_WINDOW_MS = 10.0     # RMS window of the voice-activity envelope (one analysis window)
SPEECH_BELOW_REF_DB = 30.0    # speech = envelope within this many dB of the voice's loud level
SPEECH_FLOOR_DBFS = -55.0     # ... and above this absolute floor (room noise is not speech)
DUCK_FLOOR_DB = -90.0         # base_volume 0 means "silent", not -inf


@dataclass(frozen=True)
class Bed:
    path: str
    volume: float


@dataclass(frozen=True)
class MixSpec:
    beds: tuple[Bed, ...] = ()                 # music, ambience: looped/trimmed, ducked
    sfx: tuple[SfxTrack, ...] = ()             # one-shots at their start time, not ducked
    ducking: Ducking = Ducking()
    voice_gain: float = 1.0                    # 0 keeps the voice as sidechain only (tests)

    @classmethod
    def from_options(cls, opts: FinishOptions) -> "MixSpec":
        """The mix of finish options whose media locations are local files."""
        beds = tuple(Bed(p, v) for p, v in ((opts.music, opts.music_volume),
                                            (opts.ambience, opts.ambience_volume)) if p)
        return cls(beds=beds, sfx=opts.sfx, ducking=opts.ducking)


def decode_tracks(paths: list[str], sample_rate: int = MIX_SAMPLE_RATE) -> dict[str, np.ndarray]:
    """Decode every input in ONE ffmpeg process (a process start costs more than a short
    clip's decode) -> {path: (n, 2) float32}. Channels are kept as mono or stereo (more are
    downmixed to stereo); mono is then copied to both sides at unity gain, because ffmpeg's own
    upmix drops it 3 dB and would shift the voice's balance against stereo music."""
    unique = list(dict.fromkeys(paths))
    with tempfile.TemporaryDirectory(prefix="mix_") as work:
        args: list[str] = []
        for path in unique:
            args += ["-i", path]
        outs = [os.path.join(work, f"track{i}.wav") for i in range(len(unique))]
        for i, out in enumerate(outs):
            args += ["-map", f"{i}:a:0", "-af", "aformat=channel_layouts=mono|stereo",
                     "-ar", str(sample_rate), "-c:a", "pcm_f32le", out]
        names = ", ".join(os.path.basename(p) for p in unique)
        run(args, what=f"decoding audio ({names})")
        tracks = {}
        for path, out in zip(unique, outs):
            rate, data = wavfile.read(out)
            if rate != sample_rate:
                raise MediaError(f"decoding {os.path.basename(path)}: got {rate} Hz, "
                                 f"expected {sample_rate}")
            data = np.asarray(data, np.float32)
            tracks[path] = np.repeat(data[:, None], 2, 1) if data.ndim == 1 else data[:, :2]
    return tracks


def write_mix(path: str, samples: np.ndarray, sample_rate: int = MIX_SAMPLE_RATE) -> None:
    """Float WAV: an unnormalised mix may sit above full scale, and 16-bit would clip it."""
    # Written directly (no ffmpeg process): minutes of float audio through a pipe cost seconds.
    wavfile.write(path, sample_rate, np.ascontiguousarray(samples, np.float32))


# --- voice activity and the ducking gain ------------------------------------------------------

def voice_activity(voice: np.ndarray, sample_rate: int) -> np.ndarray:
    """Per CONTROL_HOP_MS step: is the voice speaking? (causal RMS envelope over one window)."""
    hop = int(round(sample_rate * CONTROL_HOP_MS / 1000))
    n_steps = len(voice) // hop + (1 if len(voice) % hop else 0)
    padded = np.zeros(n_steps * hop, np.float64)
    padded[:len(voice)] = voice
    power = (padded.reshape(n_steps, hop) ** 2).mean(axis=1)
    # Mean power over the last window (causal moving average on the step grid).
    win = max(1, int(round(ENVELOPE_WINDOW_MS / CONTROL_HOP_MS)))
    csum = np.concatenate([[0.0], np.cumsum(power)])
    idx = np.arange(1, n_steps + 1)
    windowed = (csum[idx] - csum[np.maximum(0, idx - win)]) / win
    env_db = 10 * np.log10(windowed + 1e-12)
    audible = env_db > -70
    if not audible.any():
        return np.zeros(n_steps, bool)
    ref_db = np.percentile(env_db[audible], 95)
    return env_db > max(ref_db - SPEECH_BELOW_REF_DB, SPEECH_FLOOR_DBFS)


def _hold(active: np.ndarray, hold_steps: int) -> np.ndarray:
    """Keep `active` true for hold_steps after each true step."""
    if hold_steps <= 0 or not active.any():
        return active
    idx = np.arange(len(active))
    last_on = np.maximum.accumulate(np.where(active, idx, -10 ** 12))
    return idx - last_on <= hold_steps


def _slew_db(target_db: np.ndarray, down_per_step: float, up_per_step: float) -> np.ndarray:
    """Follow a piecewise-constant target, moving at most down/up dB per step (linear-in-dB
    ramps: the full drop takes exactly attack_ms, the full recovery exactly release_ms)."""
    out = np.empty_like(target_db)
    edges = np.flatnonzero(np.diff(target_db)) + 1
    starts = np.concatenate([[0], edges])
    ends = np.concatenate([edges, [len(target_db)]])
    level = 0.0
    for s, e in zip(starts, ends):
        goal = target_db[s]
        steps = np.arange(1, e - s + 1)
        if goal < level:
            seg = np.maximum(goal, level - down_per_step * steps)
        else:
            seg = np.minimum(goal, level + up_per_step * steps)
        out[s:e] = seg
        level = float(seg[-1])
    return out


def ducking_gain(voice: np.ndarray, sample_rate: int, ducking: Ducking) -> np.ndarray:
    """Per-sample linear gain for the beds: 1 in silence, base_volume under speech."""
    active = _hold(voice_activity(voice, sample_rate),
                   int(round(ducking.hold_ms / CONTROL_HOP_MS)))
    low_db = max(DUCK_FLOOR_DB, 20 * np.log10(max(ducking.base_volume, 1e-12)))
    target = np.where(active, low_db, 0.0)
    drop = -low_db
    down = drop / max(1.0, ducking.attack_ms / CONTROL_HOP_MS)
    up = drop / max(1.0, ducking.release_ms / CONTROL_HOP_MS)
    gain_db = _slew_db(target, down, up) if drop > 0 else np.zeros_like(target)
    hop = sample_rate * CONTROL_HOP_MS / 1000
    # Each control value holds at the end of its step; interpolate between them per sample.
    step_end = (np.arange(len(gain_db)) + 1) * hop
    per_sample = np.interp(np.arange(len(voice)), step_end, gain_db, left=0.0)
    return (10 ** (per_sample / 20)).astype(np.float32)


# --- placing tracks ------------------------------------------------------------------------------

def _fade_out(x: np.ndarray, seconds: float, sample_rate: int) -> np.ndarray:
    n = min(len(x), int(round(seconds * sample_rate)))
    if n > 1:
        x = x.copy()
        x[-n:] *= np.linspace(1.0, 0.0, n, dtype=np.float32)[:, None]
    return x


def loop_to(x: np.ndarray, n: int, sample_rate: int) -> np.ndarray:
    """Repeat `x` to n samples with an equal-power crossfade at each seam (no seam click)."""
    if len(x) >= n:
        return x[:n]
    if len(x) == 0:
        return np.zeros((n, x.shape[1]), np.float32)
    fade = int(round(LOOP_CROSSFADE_S * sample_rate))
    if len(x) <= 4 * fade:
        fade = 0
    period = len(x) - fade
    out = np.zeros((n, x.shape[1]), np.float32)
    ramp = np.sin(np.linspace(0, np.pi / 2, fade, dtype=np.float32))[:, None] if fade else None
    copy = x.copy()
    if fade:
        copy[-fade:] *= ramp[::-1]       # fades out into the next copy
    first = True
    for pos in range(0, n, period):
        piece = copy if first or not fade else np.concatenate([x[:fade] * ramp, copy[fade:]])
        first = False
        take = min(len(piece), n - pos)
        out[pos:pos + take] += piece[:take]
    return out


def build_mix(voice_path: str, spec: MixSpec, sample_rate: int = MIX_SAMPLE_RATE) -> np.ndarray:
    """The full mix, (n, 2) float32, exactly as long as the voice."""
    tracks = decode_tracks([voice_path, *(b.path for b in spec.beds),
                            *(s.url for s in spec.sfx)], sample_rate)
    voice_lr = tracks[voice_path]
    n = len(voice_lr)
    if n == 0:
        raise ValueError(f"the voice {os.path.basename(voice_path)} has no samples")
    voice = voice_lr.mean(axis=1)            # the ducker listens to the voice in mono
    out = voice_lr * np.float32(spec.voice_gain)

    # 1. Beds: loop short ones, trim long ones, always end with a fade; then duck together.
    if spec.beds:
        beds = np.zeros((n, MIX_CHANNELS), np.float32)
        for bed in spec.beds:
            beds += loop_to(tracks[bed.path], n, sample_rate) * bed.volume
        beds = _fade_out(beds, BED_FADE_OUT_S, sample_rate)
        out += beds * ducking_gain(voice, sample_rate, spec.ducking)[:, None]

    # 2. SFX: one-shots at their start time; the end of the voice cuts them with a short fade.
    for sfx in spec.sfx:
        start = int(round(sfx.start_time * sample_rate))
        if start >= n:
            continue
        sound = tracks[sfx.url] * sfx.volume
        if len(sound) > n - start:
            sound = _fade_out(sound[:n - start], SFX_FADE_OUT_S, sample_rate)
        out[start:start + len(sound)] += sound
    return out
