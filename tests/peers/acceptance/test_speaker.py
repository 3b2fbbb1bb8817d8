"""The speaker (issue 10), against devroom and against the real livekit-server (the `server_kind`
parameter): the official Python SDK publishes its 440 Hz sine, the built `roomcast run` subscribes
to it (auto_subscribe, the default) and plays it into the file speaker (`[speaker] device =
"file:..."`, raw 48 kHz S16LE written in real time), and the written PCM must carry the tone: its
dominant frequency within 5 % of 440 Hz, and sound in nearly every 20 ms block once it started; when
the talker leaves, the speaker lets go of its track.
A speaker that cannot be opened must cost nothing else: roomcast names it, publishes both tracks and
still subscribes.

Waits are on events with deadlines (roomcast's and the peer's JSON lines, roomcast's log) and on the
file growing, polled against a deadline; nothing sleeps to let time pass.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from conftest import report

RATE = 48000
BLOCK = RATE // 50  # one 20 ms tick of the mixer
TONE_HZ = 440.0
WINDOW_S = 2.0  # audio analysed, from the first block with sound
SOUND_RMS = 500  # a block with less is silence (the peer's sine has RMS ~5700)


def case(world, name: str, ok: bool, detail: str) -> None:
    report(f"{name} [{world.kind}]", ok, detail)


def read_pcm(path: Path) -> np.ndarray:
    data = path.read_bytes() if path.exists() else b""
    return np.frombuffer(data[: len(data) // 2 * 2], dtype="<i2").astype(np.float64)


def block_rms(pcm: np.ndarray) -> np.ndarray:
    n = len(pcm) // BLOCK
    return np.sqrt(np.mean(pcm[: n * BLOCK].reshape(n, BLOCK) ** 2, axis=1)) if n else np.zeros(0)


def wait_for_sound(path: Path, seconds: float, timeout: float, diagnostics) -> tuple[np.ndarray, int]:
    """The PCM once `seconds` of it follow the first block with sound; and that block's index."""
    want = int(seconds * 50)
    deadline = time.monotonic() + timeout
    while True:
        pcm = read_pcm(path)
        loud = np.nonzero(block_rms(pcm) > SOUND_RMS)[0]
        if len(loud) and len(pcm) // BLOCK >= loud[0] + want:
            return pcm, int(loud[0])
        if time.monotonic() >= deadline:
            raise AssertionError(f"{path}: {seconds:.0f} s of sound not written within {timeout:.0f}s "
                                 f"({len(pcm) / RATE:.1f} s written, {len(loud)} blocks with sound)\n"
                                 + diagnostics())
        time.sleep(0.05)  # interval of a condition poll with a deadline


def dominant_hz(x: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    spectrum[0] = 0
    return float(np.argmax(spectrum)) * RATE / len(x)


def zero_crossing_hz(x: np.ndarray) -> float:
    signs = np.signbit(x)
    return float(np.count_nonzero(signs[1:] != signs[:-1])) / 2 / (len(x) / RATE)


def test_speaker_plays_the_sdk_tone(world) -> None:
    room = "speaker"
    out = world.workdir / "speaker.raw"
    rc = world.roomcast(room, "cam", speaker=f"file:{out}")
    rc.wait_joined(30)
    talker = world.peer("py", "talker", "--publish", "audio", "--hold", room=room, stay=60)
    published = talker.wait_event("published", 30, lambda e: e.get("kind") == "audio")
    rc.wait_event("track_subscribed", 30,
                  lambda e: e.get("kind") == "audio" and e.get("track_sid") == published["track_sid"])
    pcm, first = wait_for_sound(out, WINDOW_S, 30, world.diagnostics)
    # Skip the first 100 ms: the decoder's and the sine's onset.
    start = (first + 5) * BLOCK
    window = pcm[start:start + int(WINDOW_S * RATE) - 5 * BLOCK]
    rms = block_rms(window)
    sounding = float(np.mean(rms > SOUND_RMS))
    fft_hz, zc_hz = dominant_hz(window), zero_crossing_hz(window)
    level = float(np.sqrt(np.mean(window ** 2)))
    # The talker leaves: its track is unpublished and the speaker lets go of it at once (not after
    # the 2 s a quiet source is kept), saying what its jitter buffer saw.
    talker.stop()
    sid = published["track_sid"]
    gone = rc.err.wait_line(rf"speaker: remote audio track {sid} ended;.*", 30,
                            "the speaker letting go of the talker's ended track")
    ok = (abs(fft_hz - TONE_HZ) <= 0.05 * TONE_HZ and abs(zc_hz - TONE_HZ) <= 0.05 * TONE_HZ
          and sounding >= 0.95 and 2000 <= level <= 12000)
    case(world, "roomcast plays the Python SDK's 440 Hz tone on the speaker", ok,
         f"dominant {fft_hz:.1f} Hz (FFT), {zc_hz:.1f} Hz (zero crossings), {sounding:.0%} of "
         f"{len(rms)} 20 ms blocks with sound, RMS {level:.0f}; sound from {first * 0.02:.2f} s into the file; "
         f"then {gone.group(0)}")
    assert abs(fft_hz - TONE_HZ) <= 0.05 * TONE_HZ, f"dominant frequency {fft_hz:.1f} Hz"
    assert abs(zc_hz - TONE_HZ) <= 0.05 * TONE_HZ, f"zero-crossing frequency {zc_hz:.1f} Hz"
    assert sounding >= 0.95, f"only {sounding:.0%} of the blocks have sound: {np.round(rms).tolist()}"
    assert 2000 <= level <= 12000, f"RMS {level:.0f}: the sine (amplitude 8000) should keep its level"


def test_a_missing_speaker_warns_and_the_rest_works(world) -> None:
    room = "nospeaker"
    device = "hw:CARD=roomcast-absent"
    rc = world.roomcast(room, "cam", speaker=device)
    warned = rc.err.wait_line(rf"speaker {device} not opened.*roomcast devices", 30, "the speaker warning")
    rc.wait_joined(30)
    talker = world.peer("py", "talker", "--publish", "audio", "--hold", room=room, stay=60)
    published = talker.wait_event("published", 30, lambda e: e.get("kind") == "audio")
    rc.wait_event("track_subscribed", 30,
                  lambda e: e.get("kind") == "audio" and e.get("track_sid") == published["track_sid"])
    alive = rc.proc.poll() is None
    case(world, "a missing speaker is named and costs nothing else", alive,
         f"warned \"{warned.group(0)[:90]}...\"; published video and audio; subscribed to the talker")
    assert alive
