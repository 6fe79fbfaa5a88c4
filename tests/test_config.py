"""Config loading: layering, per-language files, and errors that name the file and key."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from dubbing import tts
from dubbing.config import available_languages, check_language, config_dir, language_name, load_settings
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
    user.write_text("languages:\n  es:\n    tts:\n      rates: {espeak: 0}\n")
    with pytest.raises(DubbingError, match="rates.espeak"):
        load_settings("draft", user)
    user.write_text("languages:\n  es:\n    metric: bleu\n")
    with pytest.raises(DubbingError, match="metric"):
        load_settings("draft", user)


def test_unknown_preset_and_language_list_what_exists():
    with pytest.raises(DubbingError, match="draft"):
        load_settings("turbo")
    with pytest.raises(DubbingError, match="available: .*es"):
        load_settings().for_language("xx")


# --- the language record ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("code", available_languages())
def test_every_language_record_is_complete(code):
    """What a run of the language needs is in its record: name, stream tag, QA metric, probe sentence, a speech
    rate for its TTS backend, and backend options its backends accept (`dub doctor` runs these checks)."""
    from dubbing import translate

    cfg = load_settings().for_language(code)
    assert cfg.code == code
    assert check_language(cfg) == [] and tts.check(cfg) == [] and translate.check(cfg.translate) == []
    assert language_name(code) == cfg.name


def _config_copy(tmp_path: Path, monkeypatch) -> Path:
    root = tmp_path / "configs"
    shutil.copytree(config_dir(), root)
    monkeypatch.setenv("DUBBING_CONFIG_DIR", str(root))
    return root


def test_a_record_missing_pieces_is_reported_by_key(tmp_path, monkeypatch):
    root = _config_copy(tmp_path, monkeypatch)
    (root / "languages" / "nl.yaml").write_text("name: Dutch\niso639_2: nld\ntts:\n  backend: espeak\n")
    cfg = load_settings().for_language("nl")
    problems = check_language(cfg)
    assert any(p.startswith("tts.rates.espeak:") and "calibrate_speech_rate" in p for p in problems)
    assert any(p.startswith("metric:") for p in problems) and any(p.startswith("probe_text:") for p in problems)
    assert all("\n" not in p for p in problems)
    with pytest.raises(DubbingError, match=r"no speech rate for TTS backend espeak \(tts.rates.espeak"):
        tts.estimator(cfg)  # no default rate is guessed: the translate step fails at once, naming the key


def test_switching_a_language_to_a_backend_without_a_rate_is_reported(tmp_path):
    user = tmp_path / "mine.yaml"
    user.write_text("languages:\n  es:\n    tts:\n      backend: piper\n")
    cfg = load_settings("draft", user).for_language("es")
    assert [p.split(":")[0] for p in check_language(cfg)] == ["tts.rates.piper"]
    user.write_text("languages:\n  es:\n    tts:\n      backend: espeak\n")  # the fallback keeps its tuning
    espeak = load_settings("draft", user).for_language("es")
    assert check_language(espeak) == [] and espeak.tts.options["espeak"]["voice"] == "es+klatt"


def test_a_record_code_is_its_file_name(tmp_path, monkeypatch):
    root = _config_copy(tmp_path, monkeypatch)
    (root / "languages" / "es.yaml").write_text("code: pt\n" + (root / "languages" / "es.yaml").read_text())
    with pytest.raises(DubbingError, match="es.yaml: key 'code'"):
        load_settings()
