"""Minimal ctypes driver for the eSpeak NG library bundled with ``espeakng_loader``.

eSpeak keeps its state in process-wide globals, and some of it carries over from
one utterance to the next (the pitch-flutter phase, the automatic gain, the
roughness cycle counter), so the same text can come out slightly different
depending on what was spoken before.  To make output a function of the inputs
only, the library is initialised once in the calling process but never used
there: every call synthesises in a forked child, which starts from that
untouched state.  This needs ``os.fork`` (Linux, macOS).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import pickle
import threading
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

# Values from espeak-ng/speak_lib.h.
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_DONT_EXIT = 0x8000  # report errors instead of calling exit()
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_PARAM_RATE = 1
_PARAM_PITCH = 3
_EE_OK = 0

# int callback(short *wav, int numsamples, espeak_EVENT *events); returning 0 continues.
_SYNTH_CALLBACK = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p
)


class SpeechRequest(NamedTuple):
    text: str
    voice: str  # language voice, optionally with a variant from voices/!v: "en-us+f3"
    rate: int = 175  # words per minute, 80 to 450
    pitch: int = 50  # 0 to 100, 50 is the voice's normal pitch


class _Engine:
    """The loaded and initialised library plus the buffer its callback fills."""

    def __init__(self) -> None:
        try:
            # local: only speech synthesis needs the library, and a missing one is reported below
            import espeakng_loader

            library = ctypes.CDLL(espeakng_loader.get_library_path())
            data_path = espeakng_loader.get_data_path()
        except (ImportError, OSError, RuntimeError) as error:
            raise RuntimeError(f"cannot load the eSpeak NG library: {error}") from error

        library.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        library.espeak_SetSynthCallback.argtypes = [_SYNTH_CALLBACK]
        library.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        library.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        library.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
        library.espeak_Synth.argtypes = [
            ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int,
            ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p,
        ]  # fmt: skip

        self.sample_rate: int = library.espeak_Initialize(
            _AUDIO_OUTPUT_SYNCHRONOUS, 0, data_path.encode(), _INITIALIZE_DONT_EXIT
        )
        if self.sample_rate <= 0:
            raise RuntimeError(f"cannot initialise eSpeak NG with data from {data_path}")

        self._chunks: list[np.ndarray] = []
        # Keep a reference: ctypes frees the trampoline when the object is collected.
        self._callback = _SYNTH_CALLBACK(self._collect)
        library.espeak_SetSynthCallback(self._callback)
        self._library = library
        # Breath noise calls libc rand() rather than eSpeak's own generator.
        self._libc = ctypes.CDLL(ctypes.util.find_library("c"))

    def _collect(self, wav: ctypes.Array, num_samples: int, _events: int) -> int:
        if wav and num_samples > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(num_samples,)).copy())
        return 0

    def speak(self, request: SpeechRequest) -> np.ndarray:
        """int16 samples; only call in a child process (see the module docstring)."""
        library = self._library
        if library.espeak_SetVoiceByName(request.voice.encode()) != _EE_OK:
            raise ValueError(f"unknown eSpeak voice {request.voice!r}")
        library.espeak_SetParameter(_PARAM_RATE, request.rate, 0)
        library.espeak_SetParameter(_PARAM_PITCH, request.pitch, 0)
        library.espeak_ng_SetRandSeed(0)
        self._libc.srand(0)
        self._chunks = []
        text = request.text.encode()
        status = library.espeak_Synth(text, len(text) + 1, 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
        if status != _EE_OK:
            raise RuntimeError(f"espeak_Synth failed with status {status} for {request.text!r}")
        library.espeak_Synchronize()
        samples = np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.int16)
        self._chunks = []
        return samples


_engine: _Engine | None = None
_lock = threading.Lock()


def _loaded_engine() -> _Engine:
    global _engine
    if _engine is None:
        _engine = _Engine()
    return _engine


def _speak_in_child(engine: _Engine, requests: Sequence[SpeechRequest]) -> list[np.ndarray]:
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: synthesise, send the result, exit without running parent cleanup
        exit_code = 0
        try:
            os.close(read_end)
            try:
                result: object = [engine.speak(request) for request in requests]
            except Exception as error:  # re-raised in the parent
                result = error
            with os.fdopen(write_end, "wb") as pipe:
                pickle.dump(result, pipe, protocol=pickle.HIGHEST_PROTOCOL)
        except BaseException:
            exit_code = 1
        finally:
            os._exit(exit_code)

    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        payload = pipe.read()
    _, status = os.waitpid(pid, 0)
    if status != 0 or not payload:
        raise RuntimeError(f"eSpeak synthesis process failed (wait status {status})")
    received = pickle.loads(payload)
    if isinstance(received, Exception):
        raise received
    return received


def synthesize_many(requests: Sequence[SpeechRequest]) -> tuple[list[np.ndarray], int]:
    """Speak each request; returns (float32 waveforms in [-1, 1], sample rate).

    The batch runs in one child process, so a request's audio depends on the
    requests before it in the same batch, but not on anything else.  Batching
    amortises the fork of a child process over the batch.
    """
    with _lock:
        engine = _loaded_engine()
        samples = _speak_in_child(engine, requests)
    return [s.astype(np.float32) / 32768.0 for s in samples], engine.sample_rate


def synthesize(text: str, voice: str, rate: int = 175, pitch: int = 50) -> tuple[np.ndarray, int]:
    """Speak ``text``; returns (float32 waveform in [-1, 1], sample rate).

    ``voice`` is an eSpeak voice name, optionally with a variant ("en-us+f3"),
    ``rate`` in words per minute and ``pitch`` from 0 to 100 (50 is normal).
    """
    waveforms, sample_rate = synthesize_many([SpeechRequest(text, voice, rate, pitch)])
    return waveforms[0], sample_rate
