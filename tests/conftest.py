"""Command-line options of streammix's own test suite."""

from __future__ import annotations


def pytest_addoption(parser) -> None:
    parser.addoption(
        "--upstream-checkout", default=None, metavar="DIR",
        help="a checkout of github.com/mosaicml/streaming at the installed version's tag: "
             "tests/upstream runs upstream's own tests against StreamMixDataset from it "
             "(nothing is downloaded; without it that test is skipped)")
