import pytest

from neurodiff.errors import InputError, OutputExistsError
from neurodiff.io import OutputSet, load_image, save_like, write_sidecar


def test_writes_all_outputs_on_success(colin_path, tmp_path):
    data, record = load_image(colin_path)
    image, sidecar = tmp_path / "out" / "a.nii.gz", tmp_path / "out" / "a.json"
    with OutputSet([image, sidecar]) as out:
        assert out.tmp(image) == tmp_path / "out" / ".tmp-a.nii.gz"
        save_like(data, record, out.tmp(image))
        write_sidecar(out.tmp(sidecar), {"Seed": 0})
        assert not image.exists()
    assert sorted(p.name for p in image.parent.iterdir()) == ["a.json", "a.nii.gz"]


def test_refuses_existing_outputs_before_the_body_runs(tmp_path):
    paths = [tmp_path / "a.json", tmp_path / "b.json", tmp_path / "c.json"]
    for path in paths[1:]:
        path.write_text("old")
    ran = False
    with pytest.raises(OutputExistsError) as error:
        with OutputSet(paths):
            ran = True
    assert str(error.value) == f"{paths[1]} exists (and 1 more outputs); use --force to overwrite"
    assert not ran and paths[1].read_text() == "old"


def test_force_overwrites(tmp_path):
    path = tmp_path / "a.json"
    path.write_text("old")
    with OutputSet([path], force=True) as out:
        write_sidecar(out.tmp(path), {"new": True})
    assert path.read_text() == '{\n  "new": true\n}\n'


def test_failure_leaves_nothing(tmp_path):
    paths = [tmp_path / "a.json", tmp_path / "b.json"]
    with pytest.raises(KeyError):
        with OutputSet(paths) as out:
            write_sidecar(out.tmp(paths[0]), {})
            raise KeyError("boom")
    assert list(tmp_path.iterdir()) == []


def test_failure_removes_the_folders_it_made(tmp_path):
    path = tmp_path / "new" / "deeper" / "a.json"
    with pytest.raises(KeyError):
        with OutputSet([path]):
            raise KeyError("boom")
    assert list(tmp_path.iterdir()) == []


def test_never_overwrites_an_input_even_with_force(tmp_path):
    given = tmp_path / "mask.nii.gz"
    given.write_text("mine")
    with pytest.raises(InputError, match="would overwrite an input file"):
        OutputSet([tmp_path / "a.json", given], force=True, inputs=[tmp_path / "scan.nii.gz", given])
    assert given.read_text() == "mine"


def test_unwritten_output_is_a_bug(tmp_path):
    paths = [tmp_path / "a.json", tmp_path / "b.json"]
    with pytest.raises(RuntimeError, match="was not written"):
        with OutputSet(paths) as out:
            write_sidecar(out.tmp(paths[0]), {})
    assert list(tmp_path.iterdir()) == []


def test_unwritable_folder(tmp_path):
    blocker = tmp_path / "file.txt"
    blocker.write_text("")
    with pytest.raises(InputError) as error:
        with OutputSet([blocker / "out" / "a.nii.gz"]):
            pass
    assert str(error.value).startswith(f"cannot write to {blocker / 'out'}: ")
    with pytest.raises(InputError, match="it is a file, not a folder"):
        with OutputSet([blocker / "a.nii.gz"]):
            pass


def test_output_that_is_a_folder(tmp_path):
    with pytest.raises(InputError, match="is a folder"):
        with OutputSet([tmp_path], force=True):
            pass


def test_tmp_of_unknown_path(tmp_path):
    with pytest.raises(ValueError, match="not one of"):
        OutputSet([tmp_path / "a.json"]).tmp(tmp_path / "b.json")
