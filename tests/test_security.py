"""No file given to tropref runs code: crafted PyTorch files and CIFAR-10 batches are refused
before anything they name is built, and Keras's safe mode stays on (docs/security.md)."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest

from tropref import experiments as E
from tropref.experiments.cli import main


class _Payload:
    """Unpickling this calls ``os.system``, which would create ``marker``."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _cli_exit(argv):
    with pytest.raises(SystemExit) as info:
        main(argv)
    return str(info.value)


def test_crafted_pt_file_runs_no_code_and_is_refused(tmp_path):
    torch = pytest.importorskip("torch")
    marker = tmp_path / "pwned"
    torch.save({"weight": torch.zeros(2), "x": _Payload(marker)}, tmp_path / "evil.pt")
    msg = _cli_exit(["compress", str(tmp_path / "evil.pt"), "--subset", "--no-progress"])
    assert not marker.exists()
    assert msg.startswith("tropref: ")
    assert "posix.system" in msg
    assert "--trust-pickle" in msg
    assert "--arch" in msg


def test_whole_pickled_module_needs_trust_pickle(tmp_path, capsys):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 8), torch.nn.ReLU(), torch.nn.Linear(8, 10))
    torch.save(model, tmp_path / "net.pt")
    msg = _cli_exit(["compress", str(tmp_path / "net.pt"), "--subset", "--no-progress"])
    assert "torch.nn.modules.container.Sequential" in msg
    assert "--trust-pickle" in msg
    assert main(["compress", str(tmp_path / "net.pt"), "--subset", "--no-progress", "--trust-pickle"]) == 0
    assert "8->4" in capsys.readouterr().out


ARCH = """
import torch

class Net(torch.nn.Sequential):
    def __init__(self):
        super().__init__(torch.nn.Flatten(), torch.nn.Linear(784, 8), torch.nn.ReLU(), torch.nn.Linear(8, 10))
"""


def test_state_dict_with_arch(tmp_path, capsys):
    torch = pytest.importorskip("torch")
    (tmp_path / "mynet.py").write_text(ARCH)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 8), torch.nn.ReLU(), torch.nn.Linear(8, 10))
    torch.save(model.state_dict(), tmp_path / "w.pt")
    msg = _cli_exit(["compress", str(tmp_path / "w.pt"), "--subset", "--no-progress"])
    assert "state_dict" in msg
    assert "--arch" in msg
    arch = f"{tmp_path / 'mynet.py'}:Net"
    assert main(["compress", str(tmp_path / "w.pt"), "--subset", "--no-progress", "--arch", arch]) == 0
    assert "8->4" in capsys.readouterr().out
    assert "has no torch.nn.Module class 'Nope'" in _cli_exit(
        ["compress", str(tmp_path / "w.pt"), "--subset", "--arch", f"{tmp_path / 'mynet.py'}:Nope"]
    )
    assert "module:Class" in _cli_exit(["compress", str(tmp_path / "w.pt"), "--subset", "--arch", "nocolon"])
    torch.save({"0.weight": torch.zeros(3, 3)}, tmp_path / "bad.pt")
    assert "does not fit --arch" in _cli_exit(["compress", str(tmp_path / "bad.pt"), "--subset", "--arch", arch])


def test_unreadable_pt_and_refused_model_are_tropref_messages(tmp_path):
    torch = pytest.importorskip("torch")
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    assert "cannot read" in _cli_exit(["compress", str(tmp_path / "junk.pt"), "--subset"])
    torch.save(torch.nn.Sequential(torch.nn.Linear(784, 4), torch.nn.Tanh()), tmp_path / "tanh.pt")
    msg = _cli_exit(["compress", str(tmp_path / "tanh.pt"), "--subset", "--trust-pickle"])
    assert msg.startswith("tropref: tropref cannot read this model")
    assert "Tanh" in msg


def _batch(path, obj, protocol=pickle.DEFAULT_PROTOCOL):
    with open(path, "wb") as fh:
        pickle.dump(obj, fh, protocol=protocol)


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_cifar_batch_of_arrays_reads_at_every_protocol(tmp_path, protocol):
    data = np.random.default_rng(0).integers(0, 256, size=(3, 3072), dtype=np.uint8)
    _batch(
        tmp_path / "test_batch",
        {b"data": data, b"labels": [1, 2, 3], b"batch_label": b"x", b"filenames": [b"a", b"b", b"c"]},
        protocol,
    )
    x, y = E.load_cifar10(tmp_path)
    assert x.shape == (3, 3, 32, 32)
    assert y.tolist() == [1, 2, 3]


def test_crafted_cifar_batch_runs_no_code_and_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    _batch(tmp_path / "test_batch", {b"data": np.zeros((1, 3072), np.uint8), b"labels": [_Payload(marker)]})
    with pytest.raises(ValueError, match=r"refused (posix|os)\.system") as info:
        E.load_cifar10(tmp_path)
    assert not marker.exists()
    assert "`path`" in str(info.value)
    # through the command line too: one tropref message
    msg = _cli_exit(["compress", "lenet300", "--dataset", "cifar10", "--data", str(tmp_path)])
    assert msg.startswith("tropref: ")
    assert "refused" in msg
    assert not marker.exists()


def test_cifar_batch_of_wrong_contents(tmp_path):
    _batch(tmp_path / "test_batch", [1, 2])
    with pytest.raises(ValueError, match="b'data' and b'labels'"):
        E.load_cifar10(tmp_path)
    _batch(tmp_path / "test_batch", {b"data": np.zeros((1, 100), np.uint8), b"labels": [0]})
    with pytest.raises(ValueError, match="3,072 per image"):
        E.load_cifar10(tmp_path)
    (tmp_path / "test_batch").write_bytes(b"\x80\x04garbage")
    with pytest.raises(ValueError, match="not a CIFAR-10 batch"):
        E.load_cifar10(tmp_path)


@pytest.mark.slow
def test_keras_safe_mode_refusal_is_a_tropref_message(tmp_path):
    pytest.importorskip("keras")
    import keras

    marker = str(tmp_path / "pwned")
    model = keras.Sequential(
        [keras.Input((4,)), keras.layers.Lambda(lambda x: x * 2 + float(os.system(f"touch {marker}") * 0))]
    )
    model.save(tmp_path / "lam.keras")
    assert os.path.exists(marker)  # the payload ran once, when the model was built here
    os.unlink(marker)
    msg = _cli_exit(["compress", str(tmp_path / "lam.keras"), "--subset"])
    assert not os.path.exists(marker)
    assert msg.startswith("tropref: ")
    assert "safe_mode" in msg
    (tmp_path / "junk.keras").write_bytes(b"junk")
    assert _cli_exit(["compress", str(tmp_path / "junk.keras"), "--subset"]).startswith("tropref: cannot load")


def test_old_framework_versions_are_refused(tmp_path, monkeypatch):
    torch = pytest.importorskip("torch")
    torch.save({"w": torch.zeros(1)}, tmp_path / "w.pt")
    monkeypatch.setattr(torch, "__version__", "2.5.1+cpu")
    assert "needs PyTorch 2.6 or later" in _cli_exit(["compress", str(tmp_path / "w.pt"), "--subset"])
