"""The model store on the real registry packages: offline resolution, checksums, clear messages."""

from __future__ import annotations

import pytest

from dubbing import models
from dubbing.errors import DubbingError


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DUBBING_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_whisper_base_is_assembled_from_its_two_packages_and_verified(cache):
    path = models.resolve("whisper-base")
    assert path == cache / "models" / "whisper-base"
    assert models.sha256_file(path / "model.bin") == models.REGISTRY["whisper-base"].source.sha256
    for companion in ("config.json", "tokenizer.json", "vocabulary.txt"):
        assert (path / companion).stat().st_size > 0
    assert models.check("whisper-base").state == "available"


def test_kokoro_is_assembled_from_four_parts(cache):
    path = models.resolve("kokoro-82m")
    assert path.name == "kokoro-v1.0.int8.onnx"
    assert path.stat().st_size == sum(
        part.locate().stat().st_size for part in models.REGISTRY["kokoro-82m"].source.parts
    )


def test_a_corrupted_cached_model_is_detected_and_rebuilt(cache):
    model_bin = models.resolve("whisper-base") / "model.bin"
    with open(model_bin, "r+b") as f:
        f.seek(1000)
        byte = f.read(1)
        f.seek(1000)
        f.write(bytes([byte[0] ^ 0xFF]))
    status = models.check("whisper-base")
    assert status.state == "corrupt"
    assert "checksum mismatch" in status.message and str(model_bin) in status.message
    repaired = models.resolve("whisper-base")
    assert models.sha256_file(repaired / "model.bin") == models.REGISTRY["whisper-base"].source.sha256


def test_single_file_models_resolve_in_place_from_their_packages(cache):
    for name in ("campplus", "face-mesh", "silero-vad", "kokoro-voices", "piper-joe-en"):
        path = models.resolve(name)
        assert path.is_file()
        assert models.sha256_file(path) == models.REGISTRY[name].source.sha256
    assert models.resolve("whisper-tiny.en").joinpath("model.bin").is_file()


def test_missing_hub_model_names_the_fetch_command(cache, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(DubbingError) as err:
        models.resolve("opus-mt-en-de")
    message = str(err.value)
    assert "Helsinki-NLP/opus-mt-en-de" in message and "hf download Helsinki-NLP/opus-mt-en-de" in message
    assert "\n" not in message
    assert models.check("opus-mt-en-de").state == "missing"


def test_unknown_model_lists_known_ones():
    with pytest.raises(DubbingError, match="known models: whisper-base"):
        models.resolve("whisper-gigantic")


def test_verified_stamp_avoids_rehashing(cache, monkeypatch):
    models.resolve("whisper-base")
    calls = []
    original = models.sha256_file
    monkeypatch.setattr(models, "sha256_file", lambda p: calls.append(p) or original(p))
    models.resolve("whisper-base")
    assert calls == []


def test_pooled_models_load_once_across_threads_and_release_frees_them():
    import threading
    import time

    from dubbing import backends

    made: list[object] = []

    def load() -> object:
        time.sleep(0.05)  # slow enough that the threads ask while the first load is under way
        made.append(object())
        return made[-1]

    results: list[object] = []
    threads = [
        threading.Thread(target=lambda: results.append(backends.shared("test-kind", ("a", 1), load))) for _ in range(8)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(made) == 1 and all(r is made[0] for r in results)
    assert backends.shared("test-kind", ("b", 1), load) is made[1]  # other settings, another model
    backends.release("test-kind")
    assert backends.pooled("test-kind") == []
    assert backends.shared("test-kind", ("a", 1), load) is made[2]  # loaded again after release
    backends.release("test-kind")


def test_a_held_model_is_released_when_its_last_holder_leaves():
    from dubbing import backends

    backends.shared("held-kind", ("a",), object)
    with backends.holding("held-kind"):
        with backends.holding("held-kind"):  # two languages synthesizing side by side
            pass
        assert backends.pooled("held-kind")  # the other still holds it
    assert backends.pooled("held-kind") == []


def test_the_source_models_preload_into_the_pool_the_transcribe_step_takes_them_from():
    """What `dub run` starts while the Prefect API starts: Whisper and the diarizer, loaded once for the step."""
    from dubbing import backends, steps
    from dubbing.config import load_settings

    settings = load_settings("draft")
    backends.release("asr", "diarize")
    loads = dict(backends.loads)
    thread = steps.preload_source_models(settings)
    thread.join(300)
    assert not thread.is_alive()
    assert backends.loads["asr"] == loads.get("asr", 0) + 1 and backends.loads["diarize"] == loads.get("diarize", 0) + 1
    steps.transcriber(settings.asr), steps.diarizer(settings.diarize)  # what the step asks for: nothing loads again
    assert backends.loads["asr"] == loads.get("asr", 0) + 1 and backends.loads["diarize"] == loads.get("diarize", 0) + 1
    backends.release("asr", "diarize")
