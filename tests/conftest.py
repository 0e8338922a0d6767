"""Suite-wide settings."""

import os

import pytest
import torch

# The suite's models are tiny: several threads per process only add synchronisation, and
# on a busy machine (another process using the cores) they make a step a hundred times
# slower. One thread keeps the suite fast and its timings stable.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def digits_model(tmp_path_factory):
    """A digits CNN trained 10 epochs with ce, and the test images it classifies
    correctly: the model of the attacks' peer checks."""
    import ima

    run = ima.train({"data": {"name": "digits"}, "model": {"name": "digits_cnn"},
                     "method": {"name": "ce"}, "train": {"epochs": 10, "threads": 1}},
                    tmp_path_factory.mktemp("apgd") / "digits", progress=False)
    test = run.dataset("test")
    x = torch.stack([test[i][0] for i in range(len(test))])
    y = torch.tensor([int(test[i][1]) for i in range(len(test))])
    with torch.no_grad():
        ok = run.model(x).argmax(1) == y
    return run.model.eval(), x[ok], y[ok]


@pytest.fixture(autouse=True)
def _trust_code_stays_in_its_test():
    """The CLI's ``--trust-code`` sets IMA_TRUST_CODE in the process (so that torchrun's
    other processes see it); a test that passes it must not trust code for the tests
    after it."""
    before = os.environ.get("IMA_TRUST_CODE")
    yield
    if before is None:
        os.environ.pop("IMA_TRUST_CODE", None)
    else:
        os.environ["IMA_TRUST_CODE"] = before
