import pytest
import torch

from sclora_tools.calibration.distributed import Ranks
from sclora_tools.calibration.sink import CovarianceSink, finished
from sclora_tools.collect import Site
from sclora_tools.core.covariance import SecondMoment
from sclora_tools.errors import NumericalError
from sclora_tools.io.covariances import open_covariances
from sclora_tools.io.manifest_types import Role


def test_a_covariance_with_nan_or_inf_is_refused_with_its_site():
    for poison in (float("nan"), float("inf")):
        total = torch.eye(4, dtype=torch.float64)
        total[1, 2] = poison
        with pytest.raises(NumericalError, match="model.layers.0.mlp.down_proj:input"):
            finished(total, 10, 2, "token", "model.layers.0.mlp.down_proj:input")


def test_finite_entries_whose_sum_overflows_are_kept():
    total = torch.full((3, 3), torch.finfo(torch.float64).max, dtype=torch.float64)
    assert torch.equal(finished(total, 1, 1, "token", "site"), total)


def test_each_site_is_taken_only_when_it_is_written_so_one_float64_sum_lives_at_a_time(tmp_path, monkeypatch):
    sites = [Site(f"layers.{i}.q", "input", 3, (f"layers.{i}.q",)) for i in range(4)]
    moments = {site.key: SecondMoment(3) for site in sites}
    for i, moment in enumerate(moments.values()):
        moment.add(torch.randn(5, 3, generator=torch.Generator().manual_seed(i)))
    expected = {key: moment.total.clone() / 5 for key, moment in moments.items()}
    taken_when_written = []
    with CovarianceSink(tmp_path, sites, "float64", Ranks(), {Role.POS: (1, 5)}, "token") as sink:
        real_write = sink.writers[Role.POS].write
        monkeypatch.setattr(sink.writers[Role.POS], "write",
                            lambda key, cov: taken_when_written.append([m.taken for m in moments.values()]) or real_write(key, cov))
        sink.finish(Role.POS, moments)
        sink.close()
    assert taken_when_written == [[j <= i for j in range(4)] for i in range(4)]
    with open_covariances(tmp_path, Role.POS) as stored:
        for key, covariance in expected.items():
            torch.testing.assert_close(stored.get(key), covariance, rtol=0, atol=1e-12)
