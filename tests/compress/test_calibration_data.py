import pytest
import safetensors.torch
import torch

from compress import CalibrationError, CalibrationSet, load_calibration, save_calibration


def test_file_round_trip_of_tensor_positional_and_keyword_batches(tmp_path):
    batches = [
        torch.randn(3, 4),
        (torch.randn(2, 4), torch.arange(2)),
        {"input_ids": torch.arange(6).reshape(2, 3), "attention_mask": torch.ones(2, 3, dtype=torch.int64)},
    ]
    path = tmp_path / "calibration.safetensors"
    save_calibration(path, batches)
    loaded = load_calibration(path)
    assert torch.equal(loaded[0], batches[0])
    assert isinstance(loaded[1], tuple) and all(torch.equal(a, b) for a, b in zip(loaded[1], batches[1]))
    assert set(loaded[2]) == {"input_ids", "attention_mask"}
    assert all(torch.equal(loaded[2][k], batches[2][k]) for k in batches[2])


def test_ten_or_more_batches_keep_their_order(tmp_path):
    batches = [torch.full((1, 2), float(i)) for i in range(12)]
    save_calibration(tmp_path / "c.safetensors", batches)
    assert [float(b[0, 0]) for b in load_calibration(tmp_path / "c.safetensors")] == list(range(12))


def write(path, tensors, metadata=None):
    metadata = {"format": "compress.calibration", "version": "1"} if metadata is None else metadata
    safetensors.torch.save_file(tensors, str(path), metadata=metadata)


@pytest.mark.parametrize(
    ("tensors", "metadata", "message"),
    [
        ({"0": torch.ones(2)}, {}, "not a calibration file"),
        ({"0": torch.ones(2)}, {"format": "compress.calibration", "version": "2"}, "not a calibration file"),
        ({"x": torch.ones(2)}, None, "tensor name 'x'"),
        ({"0": torch.ones(2), "2": torch.ones(2)}, None, "without gaps"),
        ({"0": torch.ones(2), "0.a": torch.ones(2)}, None, "mixes"),
        ({"0/0": torch.ones(2), "0/2": torch.ones(2)}, None, "positions"),
        ({"0/0": torch.ones(2), "0/01": torch.ones(2)}, None, "positions"),
        ({"0": torch.tensor([1.0, float("nan")])}, None, "NaN or inf"),
        ({}, None, "empty"),
    ],
)
def test_bad_files_are_refused_naming_the_problem(tmp_path, tensors, metadata, message):
    path = tmp_path / "bad.safetensors"
    write(path, tensors, metadata)
    with pytest.raises(CalibrationError, match=message):
        load_calibration(path)


def test_unreadable_files_are_refused(tmp_path):
    path = tmp_path / "junk.safetensors"
    path.write_bytes(b"\x00" * 20)
    with pytest.raises(CalibrationError, match="not a readable safetensors file"):
        load_calibration(path)
    with pytest.raises(CalibrationError, match="not a readable"):
        load_calibration(tmp_path / "missing.safetensors")


def test_saving_refuses_non_tensors_and_nothing(tmp_path):
    with pytest.raises(CalibrationError, match="only tensors"):
        save_calibration(tmp_path / "c.safetensors", [(torch.ones(2), 3)])
    with pytest.raises(CalibrationError, match="empty"):
        save_calibration(tmp_path / "c.safetensors", [])


def test_checks_name_the_batch_and_argument():
    with pytest.raises(CalibrationError, match=r"batch 1, argument 'x': 1 of 4 values are NaN or inf"):
        CalibrationSet([{"x": torch.ones(4)}, {"x": torch.tensor([1.0, 2.0, float("inf"), 0.0])}])
    with pytest.raises(CalibrationError, match=r"batch 0, argument 1 is empty"):
        CalibrationSet([(torch.ones(2), torch.ones(0))])
    with pytest.raises(CalibrationError, match="keyword 3"):
        CalibrationSet([{3: torch.ones(2)}])
    # A generator is read once and kept for the many runs of the model.
    inputs = CalibrationSet(torch.ones(2, 3) for _ in range(3))
    assert len(inputs.batches) == 3
