"""Config loading: layering, per-language files, and errors that name the file and key."""

from __future__ import annotations

import pytest

from dubbing.config import available_languages, load_settings
from dubbing.errors import DubbingError


def test_defaults_presets_and_languages_load():
    draft, final = load_settings("draft"), load_settings("final")
    assert draft.asr.beam_size < final.asr.beam_size
    assert {"es", "pt", "fr", "it", "de", "ca"} <= set(available_languages())
    es = draft.for_language("es")
    assert es.translate.backend and es.tts.backend
    assert 1.0 <= es.timing.max_speedup <= 1.4


def test_user_file_overrides_one_language(tmp_path):
    user = tmp_path / "mine.yaml"
    user.write_text("languages:\n  es:\n    timing:\n      max_speedup: 1.1\n")
    settings = load_settings("draft", user)
    assert settings.for_language("es").timing.max_speedup == 1.1
    assert settings.for_language("pt").timing.max_speedup == load_settings().for_language("pt").timing.max_speedup


def test_unknown_key_names_file_key_and_allowed_values(tmp_path):
    user = tmp_path / "bad.yaml"
    user.write_text("asr:\n  modle: whisper-base\n")
    with pytest.raises(DubbingError) as err:
        load_settings("draft", user)
    message = str(err.value)
    assert str(user) in message and "asr.modle" in message and "model" in message and "backend" in message


def test_wrong_type_and_out_of_range_values_are_rejected(tmp_path):
    user = tmp_path / "bad.yaml"
    user.write_text("languages:\n  es:\n    timing:\n      max_speedup: 2.0\n")
    with pytest.raises(DubbingError, match="max_speedup"):
        load_settings("draft", user)
    user.write_text("asr:\n  backend: whisperx\n")
    with pytest.raises(DubbingError, match="faster-whisper"):
        load_settings("draft", user)


def test_unknown_preset_and_language_list_what_exists():
    with pytest.raises(DubbingError, match="draft"):
        load_settings("turbo")
    with pytest.raises(DubbingError, match="available: .*es"):
        load_settings().for_language("xx")
