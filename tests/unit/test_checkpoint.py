import pytest
import torch

from escala.checkpoint import capture_rng, load_checkpoint, restore_rng, save_atomic, save_checkpoint
from escala.errors import UserError


def _state():
    return {"model": {"w": torch.arange(4.0)}, "epoch": 1, "step": 10}


def test_round_trip_and_no_temporary_left(tmp_path):
    path = save_checkpoint(_state(), tmp_path / "c.pt")
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]
    assert torch.equal(load_checkpoint(path)["model"]["w"], torch.arange(4.0))


def test_truncated_file_is_a_clear_error(tmp_path):
    path = save_checkpoint(_state(), tmp_path / "c.pt")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match="c.pt cannot be read"):
        load_checkpoint(path)


def test_foreign_files_are_refused(tmp_path):
    torch.save({"weights": torch.ones(2)}, tmp_path / "foreign.pt")
    with pytest.raises(UserError, match="not an escala checkpoint"):
        load_checkpoint(tmp_path / "foreign.pt")
    (tmp_path / "text.pt").write_text("hello")
    with pytest.raises(UserError, match="text.pt cannot be read"):
        load_checkpoint(tmp_path / "text.pt")
    with pytest.raises(UserError, match="does not exist"):
        load_checkpoint(tmp_path / "none.pt")


def test_pickled_code_is_not_executed(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"format": "escala-checkpoint", "version": 1, "x": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(UserError, match="evil.pt cannot be read"):
        load_checkpoint(tmp_path / "evil.pt")


def test_failed_write_keeps_the_old_file(tmp_path):
    path = save_atomic({"a": torch.ones(1)}, tmp_path / "c.pt")
    before = path.read_bytes()

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        save_atomic({"a": Unpicklable()}, path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]


def test_rng_round_trip(tmp_path):
    torch.manual_seed(1)
    state = capture_rng()
    expected = torch.rand(5)
    save_checkpoint({**_state(), "rng": [state]}, tmp_path / "c.pt")
    torch.manual_seed(99)
    restore_rng(load_checkpoint(tmp_path / "c.pt")["rng"][0])
    assert torch.equal(torch.rand(5), expected)
