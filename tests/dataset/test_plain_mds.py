"""Plain MDS as local/remote: one folder is one domain, a folder of folders one domain each."""

from __future__ import annotations

import gc
import hashlib
import os
import tempfile
from collections import Counter
from pathlib import Path

import pytest
from streaming import Stream

from streammix import MixingConfig, StreamMixDataset


def _ids(samples) -> list[tuple[int, int]]:
    return [(int(s["domain"]), int(s["index"])) for s in samples]


def _make(**kwargs) -> StreamMixDataset:
    gc.collect()
    mixing = kwargs.pop("mixing", {})
    return StreamMixDataset(batch_size=8, mixing=MixingConfig(seed=3, **mixing), **kwargs)


def test_one_mds_folder_is_one_domain(mds_domains) -> None:
    dataset = _make(local=str(mds_domains[1]))
    assert dataset.domain_names == ("beta",)
    assert sorted(i for _, i in _ids(dataset)) == list(range(60))
    del dataset
    named = _make(local=str(mds_domains[1]), mixing={"domains": ("web",)})
    assert named.domain_names == ("web",)


def test_a_folder_of_mds_folders_is_one_domain_each(mds_domains) -> None:
    root = mds_domains[0].parent
    dataset = _make(local=str(root))
    assert dataset.domain_names == ("alpha", "beta", "gamma")
    served = _ids(dataset)
    assert Counter(d for d, _ in served) == {0: 120, 1: 60, 2: 36}
    del dataset
    as_streams = _make(streams=[Stream(local=str(d)) for d in mds_domains])
    assert _ids(as_streams) == served
    del as_streams
    some = _make(local=str(root), mixing={"domains": ("gamma", "alpha")})
    assert some.domain_names == ("gamma", "alpha") and len(some) == 156


def test_plain_mds_on_a_remote(mds_domains, tmp_path) -> None:
    root = mds_domains[0].parent
    one = _make(remote=str(mds_domains[2]), local=str(tmp_path / "one"))
    assert one.domain_names == ("one",) and len(_ids(one)) == 36
    del one
    with pytest.raises(ValueError, match="name its MDS subfolders with MixingConfig\\(domains"):
        _make(remote=str(root), local=str(tmp_path / "many"))
    many = _make(remote=str(root), local=str(tmp_path / "many"),
                 mixing={"domains": ("alpha", "beta")})
    assert Counter(d for d, _ in _ids(many)) == {0: 120, 1: 60}
    del many
    with pytest.raises(ValueError, match="'delta'.*has no index.json"):
        _make(remote=str(root), local=str(tmp_path / "bad"), mixing={"domains": ("delta",)})


def test_the_cache_folder_holds_only_the_data(mds_domains, tmp_path) -> None:
    dataset = _make(remote=str(mds_domains[2]), local=str(tmp_path / "cache"))
    assert len(_ids(dataset)) == 36
    del dataset
    cached = sorted(p.name for p in (tmp_path / "cache").iterdir())
    written = sorted(p.name for p in mds_domains[2].iterdir())
    assert cached == written  # index.json and shards: no lock or manifest files left beside


def test_remote_without_local_caches_where_upstream_does(mds_domains, tmp_path,
                                                         monkeypatch) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    os.makedirs(tmp_path / "tmp")
    remote = str(mds_domains[2])
    dataset = _make(remote=remote)
    assert sorted(i for _, i in _ids(dataset)) == list(range(36))
    digest = hashlib.blake2s(remote.encode(), digest_size=16).hexdigest()
    assert (tmp_path / "tmp" / digest / "index.json").exists()
    del dataset
    with pytest.raises(FileExistsError, match="temporary cache folder .* already exists"):
        _make(remote=remote)
    with pytest.raises(ValueError, match="needs local="):
        _make()


def test_a_remote_without_an_index_is_a_file_not_found(mds_domains, tmp_path) -> None:
    empty = tmp_path / "empty-remote"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="No such file or directory.*no index.json"):
        _make(remote=str(empty), local=str(tmp_path / "cache"))


def test_basename_clashes_are_named_explicitly(tmp_path, mds_writer) -> None:
    a = mds_writer(tmp_path / "a", "web", 20, shard_samples=8)
    b = mds_writer(tmp_path / "b", "web", 12, shard_samples=8)
    with pytest.raises(ValueError, match="share a domain folder name.*MixingConfig\\(domains"):
        _make(streams=[Stream(local=str(a)), Stream(local=str(b))])
    dataset = _make(streams=[Stream(local=str(a)), Stream(local=str(b))],
                    mixing={"domains": ("web_a", "web_b")})
    assert dataset.domain_names == ("web_a", "web_b") and len(dataset) == 32


def test_upstream_split_subfolder(tmp_path, mds_writer) -> None:
    mds_writer(tmp_path / "corpus", "train", 20, shard_samples=8)
    dataset = _make(local=str(tmp_path / "corpus"), split="train")
    assert dataset.domain_names == ("corpus",) and len(_ids(dataset)) == 20


def test_features_that_need_a_build_say_so(mds_domains, tmp_path) -> None:
    dataset = _make(local=str(mds_domains[0].parent))
    with pytest.raises(ValueError, match="held-out samples need a streammix build"):
        dataset.held_out_samples(2)
    del dataset
    with pytest.raises(ValueError, match="split='val'\\) needs a streammix build"):
        _make(local=str(mds_domains[0].parent), mixing={"split": "val"})
    with pytest.raises(ValueError, match="cannot pack domain 'alpha'.*token counts"):
        _make(local=str(mds_domains[0].parent), mixing={"sequence_length": 8})
    empty = Path(tmp_path / "empty")
    empty.mkdir()
    with pytest.raises(ValueError, match="no streammix.yaml.*no index.json.*no subfolders"):
        _make(local=str(empty))


class _TaggedStream(Stream):
    """A registered Stream subclass, as upstream's ``stream_name`` names one."""

    def __init__(self, *, tag: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.tag = tag


def test_stream_name_makes_each_domain_a_registered_stream_class(mds_domains) -> None:
    from streaming.base.stream import streams_registry

    streams_registry.register("streammix_test_tagged", func=_TaggedStream)
    root = mds_domains[0].parent
    plain = _ids(_make(local=str(root)))
    tagged = _make(local=str(root), stream_name="streammix_test_tagged",
                   stream_config={"tag": 7, "local": "ignored"})
    assert [type(s) for s in tagged.streams] == [_TaggedStream] * 3
    assert [s.tag for s in tagged.streams] == [7, 7, 7]
    assert [s.local for s in tagged.streams] == [str(d) for d in mds_domains]
    assert _ids(tagged) == plain
    del tagged
    one = _make(local=str(mds_domains[2]), stream_name="streammix_test_tagged",
                stream_config={"tag": 1})
    assert isinstance(one.streams[0], _TaggedStream) and len(_ids(one)) == 36
    del one
    with pytest.raises(ValueError, match="with streams=\\[...\\] make the streams as instances"):
        _make(streams=[Stream(local=str(d)) for d in mds_domains],
              stream_name="streammix_test_tagged", stream_config={"tag": 1})
    with pytest.raises(TypeError, match="stream_config must be a dict"):
        _make(local=str(root), stream_config=[("tag", 1)])
    with pytest.raises(Exception, match="no_such_stream"):
        _make(local=str(root), stream_name="no_such_stream")
