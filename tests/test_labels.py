"""Label files as the archives publish them, class folders, the label choices, bad input, and
conditional runs on the classes the data defines (2 and 7) in both backends."""

from __future__ import annotations

import csv
import json
import os
import struct
import zlib

import cv2
import numpy as np
import pytest

from service.data import load_images, split
from service.errors import UserError
from service.labels import read_label_file
from service.run import main

TINY = {"width": 4, "max_width": 16, "latent_dim": 8, "batch_size": 4, "max_rebalance_steps": 2}
ISIC_2018 = "image,MEL,NV,BCC,AKIEC,BKL,DF,VASC"
ISIC_2019 = "image,MEL,NV,BCC,AK,BKL,DF,VASC,SCC,UNK"
HAM10000 = "lesion_id,image_id,dx,dx_type,age,sex,localization"
ISIC_2020 = "image_name,patient_id,lesion_id,sex,age_approx,anatom_site_general_challenge,diagnosis,benign_malignant,target"


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LESIONGAN_CACHE", str(tmp_path / "cache"))


def image_ids(count: int) -> list[str]:
    return [f"ISIC_{i:07d}" for i in range(count)]


def write_images(folder, names, size=16):
    folder.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        pixels = np.random.default_rng(i).integers(0, 256, (size, size, 3), dtype=np.uint8)
        assert cv2.imwrite(str(folder / f"{name}.png"), pixels)
    return folder


def one_hot(header: str, ids, classes) -> str:
    columns = header.split(",")[1:]
    rows = [",".join([image_id] + ["1.0" if c == cls else "0.0" for c in columns]) for image_id, cls in zip(ids, classes)]
    return "\n".join([header, *rows]) + "\n"


def isic_set(root, name: str):
    """(label file path, expected class names, expected labels, expected groups or None) of a
    small copy of set `name`, images in root/images, the label file (and metadata) in root."""
    images = root / "images"
    if name == "ISIC 2016":
        ids = image_ids(4)
        text = "".join(f"{i},{c}\n" for i, c in zip(ids, ("benign", "malignant", "benign", "benign")))
        files = {"ISBI2016_ISIC_Part3_Training_GroundTruth.csv": text}
        expected = (("benign", "malignant"), [0, 1, 0, 0], None)
    elif name == "ISIC 2017":
        ids = image_ids(4)
        rows = ["image_id,melanoma,seborrheic_keratosis"] + [f"{i},{m},{s}" for i, (m, s) in
                                                             zip(ids, ((0.0, 0.0), (1.0, 0.0), (0.0, 1.0), (0.0, 0.0)))]
        files = {"ISIC-2017_Training_Part3_GroundTruth.csv": "\n".join(rows) + "\n"}
        expected = (("nevus", "melanoma", "seborrheic_keratosis"), [0, 1, 2, 0], None)
    elif name == "public copy":
        ids = image_ids(4)
        files = {
            "ISIC-2017_Training_Classes.csv": "image_id,melanoma\n" + "".join(f"{i},{m}\n" for i, m in zip(ids, (0.0, 1.0, 0.0, 1.0))),
            "ISIC-2017_Training_Data_metadata.csv": "image_id,age_approximate,sex\n" + "".join(f"{i},55,female\n" for i in ids),
        }
        expected = (("not_melanoma", "melanoma"), [0, 1, 0, 1], None)
    elif name == "ISIC 2018":
        ids = image_ids(7)
        codes = ISIC_2018.split(",")[1:]
        lesions = ["HAM_0000001", "HAM_0000001", "HAM_0000002", "HAM_0000003", "HAM_0000003", "HAM_0000004", "HAM_0000005"]
        files = {
            "ISIC2018_Task3_Training_GroundTruth.csv": one_hot(ISIC_2018, ids, codes),
            "HAM10000_metadata.csv": HAM10000 + "\n" + "".join(
                f"{lesion},{i},{code.lower()},histo,50.0,male,back\n" for lesion, i, code in zip(lesions, ids, codes)),
        }
        expected = (tuple(codes), list(range(7)), [0, 0, 1, 2, 2, 3, 4])
    elif name == "HAM10000":
        ids = image_ids(5)
        dx = ["nv", "mel", "nv", "bkl", "nv"]
        lesions = ["HAM_0000118", "HAM_0000118", "HAM_0002730", "HAM_0002730", "HAM_0001466"]
        files = {"HAM10000_metadata.csv": HAM10000 + "\n" + "".join(
            f"{lesion},{i},{d},histo,80.0,male,scalp\n" for lesion, i, d in zip(lesions, ids, dx))}
        expected = (("bkl", "mel", "nv"), [2, 1, 2, 0, 2], [0, 0, 2, 2, 1])
    elif name == "ISIC 2019":
        ids = image_ids(8)
        codes = ISIC_2019.split(",")[1:9]  # UNK: no training image, as in the archive
        files = {
            "ISIC_2019_Training_GroundTruth.csv": one_hot(ISIC_2019, ids, codes),
            "ISIC_2019_Training_Metadata.csv": "image,age_approx,anatom_site_general,lesion_id,sex\n" + "".join(
                f"{i},55.0,anterior torso,{'BCN_0000001' if k < 2 else ''},female\n" for k, i in enumerate(ids)),
        }
        expected = (tuple(codes), list(range(8)), [0, 0, 1, 2, 3, 4, 5, 6])
    elif name == "ISIC 2020":
        ids = image_ids(4)
        rows = [f"{i},IP_{p},,male,45.0,torso,{d},{bm},{t}" for i, p, d, bm, t in zip(
            ids, (7279968, 7279968, 5075533, 3826423), ("unknown", "melanoma", "nevus", "unknown"),
            ("benign", "malignant", "benign", "benign"), (0, 1, 0, 0))]
        files = {"ISIC_2020_Training_GroundTruth.csv": ISIC_2020 + "\n" + "\n".join(rows) + "\n"}
        expected = (("benign", "malignant"), [0, 1, 0, 0], [2, 2, 1, 0])
    root.mkdir(parents=True, exist_ok=True)
    for file_name, text in files.items():
        (root / file_name).write_text(text)
    write_images(images, ids)
    return root / next(iter(files)), *expected


def same_partition(a, b) -> bool:
    """Whether two group lists put the same images together (the numbers themselves are arbitrary)."""
    first = lambda groups: [groups.index(g) for g in groups]  # noqa: E731
    return first(list(a)) == first(list(b))


SETS = ("ISIC 2016", "ISIC 2017", "public copy", "ISIC 2018", "HAM10000", "ISIC 2019", "ISIC 2020")


@pytest.mark.parametrize("name", SETS)
@pytest.mark.parametrize("form", ["--labels", "found beside the images"])
def test_every_public_label_file_gives_its_classes_labels_and_groups(tmp_path, name, form, capsys):
    label_file, class_names, labels, groups = isic_set(tmp_path / "set", name)
    given = label_file if form == "--labels" else None
    dataset = load_images(tmp_path / "set" / "images", 32, labels_csv=given, progress=False)
    assert dataset.class_names == class_names
    assert dataset.labels.tolist() == labels
    assert (dataset.groups is None and groups is None) or same_partition(dataset.groups.tolist(), groups)
    assert dataset.labelling["labels_file"] == str(label_file)
    assert "warning" not in capsys.readouterr().err


def test_groups_flow_into_the_split(tmp_path):
    isic_set(tmp_path / "set", "HAM10000")
    dataset = load_images(tmp_path / "set" / "images", 32, progress=False)
    kept, held_out = split(dataset, 0.4, seed=0)
    assert not set(kept.groups.tolist()) & set(held_out.groups.tolist())
    assert dataset.labelling["group_column"] == "lesion_id"


def test_isic_2020_other_label_columns_and_unknown(tmp_path, capsys):
    isic_set(tmp_path / "set", "ISIC 2020")
    images = tmp_path / "set" / "images"
    dropped = load_images(images, 32, label_column="diagnosis", progress=False)
    assert dropped.class_names == ("melanoma", "nevus") and dropped.labels.tolist() == [0, 1]
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "left out 2 of 4 images: 2 labelled unknown" in err
    kept = load_images(images, 32, label_column="diagnosis", unknown="keep", progress=False)
    assert kept.class_names == ("melanoma", "nevus", "unknown") and kept.labels.tolist() == [2, 0, 1, 2]
    assert load_images(images, 32, label_column="benign_malignant", progress=False).labels.tolist() == [0, 1, 0, 0]


def test_classes_binary_and_unknown_choices(tmp_path, capsys):
    label_file, *_ = isic_set(tmp_path / "set", "ISIC 2018")
    images = tmp_path / "set" / "images"
    subset = load_images(images, 32, classes=("mel", "nv", "bkl"), progress=False)
    assert subset.class_names == ("MEL", "NV", "BKL") and subset.labels.tolist() == [0, 1, 2]
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "left out 4 of 7 images: 4 of classes not in --classes" in err
    binary = load_images(images, 32, binary="MEL", progress=False)
    assert binary.class_names == ("not_MEL", "MEL") and binary.labels.tolist() == [1, 0, 0, 0, 0, 0, 0]
    ids = image_ids(3)
    (tmp_path / "s19").mkdir()
    (tmp_path / "s19" / "gt.csv").write_text(one_hot(ISIC_2019, ids, ("MEL", "UNK", "NV")))
    write_images(tmp_path / "s19" / "images", ids)
    kept = load_images(tmp_path / "s19" / "images", 32, unknown="keep", progress=False)
    assert len(kept.class_names) == 9 and kept.labels.tolist() == [0, 8, 1]
    dropped = load_images(tmp_path / "s19" / "images", 32, progress=False)
    assert "UNK" not in dropped.class_names and dropped.labels.tolist() == [0, 1]


def test_class_folders_are_sorted_classes_unless_unlabelled(tmp_path):
    for cls in ("nevus", "melanoma", "bcc"):
        write_images(tmp_path / "train" / cls, [f"{cls}_{i}" for i in range(2)])
    dataset = load_images(tmp_path / "train", 32, progress=False)
    assert dataset.class_names == ("bcc", "melanoma", "nevus") and dataset.labels.tolist() == [0, 0, 1, 1, 2, 2]
    assert load_images(tmp_path / "train", 32, unlabelled=True, progress=False).labels is None
    write_images(tmp_path / "train", ["loose"])
    with pytest.raises(UserError, match=r"mixes 1 loose image\(s\) \(loose.png\) and class subfolders \(bcc/, melanoma/, nevus/\)"):
        load_images(tmp_path / "train", 32, progress=False)


def test_bom_and_crlf_files_just_work(tmp_path):
    ids = image_ids(2)
    (tmp_path / "gt.csv").write_bytes(("\ufeffimage_id,melanoma\r\n" + "".join(f"{i},{m}\r\n" for i, m in zip(ids, (1, 0)))).encode())
    write_images(tmp_path / "images", ids)
    assert load_images(tmp_path / "images", 32, progress=False).labels.tolist() == [1, 0]


@pytest.mark.parametrize("text, options, message", [
    ("image,MEL,NV\nISIC_0000000,1,1\nISIC_0000001,0,1\n", {}, r"line 2 \(ISIC_0000000\): 2 active class columns \(MEL, NV\)"),
    ("image,MEL,NV\nISIC_0000000,1,0\nISIC_0000001,0,0\n", {}, r"line 3 \(ISIC_0000001\): no active class column"),
    ("image_id,melanoma\nISIC_0000000,2\nISIC_0000001,0\n", {}, r"column melanoma holds '2'; class columns hold 0 or 1"),
    ("image_id,age,sex\nISIC_0000000,3,m\nISIC_0000001,4,f\n", {}, r"unknown header \(columns: image_id, age, sex\); known formats: ISIC 2016"),
    ("image_id,melanoma\nISIC_0000000,1\nISIC_0000001,0\n", {"classes": ("nevus",)}, r"--classes: unknown class 'nevus' .* the classes are not_melanoma, melanoma"),
    ("image_id,melanoma\nISIC_0000000,1\nISIC_0000001,0\n", {"label_column": "dx"}, r"--label-column dx: no such column .*image_id, melanoma"),
    ("image_id,melanoma\nISIC_0000000,1\nISIC_0000001,0\nISIC_0000000,0\n", {}, r"image ISIC_0000000 appears twice with different labels \(line 2: melanoma, line 4: not_melanoma\)"),
])
def test_bad_label_files_are_one_line_errors(tmp_path, text, options, message):
    (tmp_path / "gt.csv").write_text(text)
    write_images(tmp_path / "images", image_ids(2))
    with pytest.raises(UserError, match=message) as caught:
        load_images(tmp_path / "images", 32, labels_csv=tmp_path / "gt.csv", progress=False, **options)
    assert "\n" not in str(caught.value)


def test_images_without_rows_fail_and_rows_without_images_warn(tmp_path, capsys):
    (tmp_path / "gt.csv").write_text("image_id,melanoma\n" + "".join(f"{i},0\n" for i in image_ids(3)[1:]))
    write_images(tmp_path / "images", image_ids(2))
    with pytest.raises(UserError, match=r"1 of 2 images have no row in .*gt.csv \(ISIC_0000000\)"):
        load_images(tmp_path / "images", 32, progress=False)
    os.remove(tmp_path / "images" / "ISIC_0000000.png")
    assert load_images(tmp_path / "images", 32, progress=False).labels.tolist() == [0]
    assert "1 id(s) in" in capsys.readouterr().err


def test_a_same_label_twice_is_not_an_error(tmp_path):
    (tmp_path / "gt.csv").write_text("image_id,melanoma\nISIC_0000000,1\nISIC_0000000,1.0\n")
    assert read_label_file(tmp_path / "gt.csv").labels == {"ISIC_0000000": 1}


# ----------------------------------------------------------------------------- hostile files


@pytest.mark.parametrize("header, options, column", [
    ("image_id,melanoma,image_id", {}, "image_id"),
    ("image,MEL,NV,MEL", {}, "MEL"),
    ("image_id,melanoma,seborrheic_keratosis,melanoma", {}, "melanoma"),
    ("image_name,patient_id,target,patient_id", {}, "patient_id"),
    ("lesion_id,image_id,dx,dx", {}, "dx"),
    ("image_id,grade,grade", {"label_column": "grade"}, "grade"),
])
def test_a_column_the_format_reads_twice_is_a_one_line_error(tmp_path, header, options, column):
    columns = header.split(",")
    ids = image_ids(2)
    rows = [",".join(i if c in ("image", "image_id", "image_name") else "p1" if c == "patient_id" else "0" for c in columns)
            for i in ids]
    (tmp_path / "gt.csv").write_text("\n".join([header, *rows]) + "\n")
    write_images(tmp_path / "images", ids)
    with pytest.raises(UserError, match=rf"gt.csv: the header has 2 columns named {column}; rename or remove") as caught:
        load_images(tmp_path / "images", 32, labels_csv=tmp_path / "gt.csv", progress=False, **options)
    assert "\n" not in str(caught.value)


def test_a_duplicate_column_the_format_does_not_read_is_fine(tmp_path):
    ids = image_ids(2)
    (tmp_path / "gt.csv").write_text("image_id,melanoma,age,age\n" + "".join(f"{i},{k},30,31\n" for k, i in enumerate(ids)))
    write_images(tmp_path / "images", ids)
    assert load_images(tmp_path / "images", 32, progress=False).labels.tolist() == [0, 1]


@pytest.mark.parametrize("header", ["image,lesion_id,lesion_id", "image,image,lesion_id"])
def test_a_groups_file_beside_with_a_column_twice_is_a_one_line_error(tmp_path, header):
    ids = image_ids(2)
    (tmp_path / "gt.csv").write_text(one_hot(ISIC_2018, ids, ("MEL", "NV")))
    (tmp_path / "groups.csv").write_text(header + "\n" + "".join(f"{i},{i},L{k}\n" for k, i in enumerate(ids)))
    write_images(tmp_path / "images", ids)
    column = "lesion_id" if header.count("lesion_id") == 2 else "image"
    with pytest.raises(UserError, match=rf"groups file .*groups.csv: the header has 2 columns named {column}") as caught:
        load_images(tmp_path / "images", 32, progress=False)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("given", ["", ",", " , ,"])
def test_classes_naming_no_class_is_exit_2_with_one_line_and_nothing_written(tmp_path, capsys, given):
    for cls in ("melanoma", "nevus"):
        write_images(tmp_path / "train" / cls, [f"{cls}_{i}" for i in range(2)])
    out = tmp_path / "run"
    assert main(["train", "--data", str(tmp_path / "train"), "--out", str(out), "--classes", given,
                 "--image-size", "32", "--epochs", "1", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --classes") and "names no class" in err and err.count("\n") == 1
    assert not out.exists()
    with pytest.raises(UserError, match="an empty class name"):
        load_images(tmp_path / "train", 32, classes=("melanoma", " "), progress=False)


def test_linked_class_folders_are_followed_and_named_in_one_line(tmp_path, capsys):
    root = tmp_path / "train"
    write_images(root / "nevus", ["nevus_0", "nevus_1"])
    write_images(tmp_path / "elsewhere" / "mel", ["mel_0", "mel_1"])
    write_images(root / ".store" / "bcc", ["bcc_0"])
    os.symlink(tmp_path / "elsewhere" / "mel", root / "melanoma")
    os.symlink(root / ".store" / "bcc", root / "bcc")
    os.symlink(root, root / "nevus" / "loop")  # a cycle: not followed
    dataset = load_images(root, 32, progress=False)
    assert dataset.class_names == ("bcc", "melanoma", "nevus") and dataset.labels.tolist() == [0, 1, 1, 2, 2]
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"followed 2 linked folder(s) in {root}: ")
    assert f"melanoma -> {tmp_path / 'elsewhere' / 'mel'} (outside the data folder)" in err
    assert f"bcc -> {root / '.store' / 'bcc'};" in err or err.rstrip().endswith(f"bcc -> {root / '.store' / 'bcc'}")
    assert "loop" not in err


def test_one_folder_reached_by_two_paths_is_a_one_line_error(tmp_path):
    root = tmp_path / "train"
    write_images(root / "nevus", ["nevus_0"])
    write_images(tmp_path / "mel", ["mel_0"])
    os.symlink(tmp_path / "mel", root / "melanoma")
    os.symlink(tmp_path / "mel", root / "melanoma_again")
    with pytest.raises(UserError, match=r"melanoma_again and .*melanoma are the same folder") as caught:
        load_images(root, 32, progress=False)
    assert "\n" not in str(caught.value)


def test_an_empty_class_folder_is_an_error_unless_left_out(tmp_path, capsys):
    root = tmp_path / "train"
    for cls in ("melanoma", "nevus"):
        write_images(root / cls, [f"{cls}_{i}" for i in range(2)])
    (root / "bcc").mkdir()
    (root / "bcc" / "notes.txt").write_text("to do")
    with pytest.raises(UserError, match=r"1 class folder\(s\) hold no JPEG/PNG/BMP image \(.*train/bcc\)") as caught:
        load_images(root, 32, progress=False)
    assert "\n" not in str(caught.value)
    with pytest.raises(UserError, match=r"train/bcc"):
        load_images(root, 32, binary="melanoma", progress=False)
    kept = load_images(root, 32, classes=("melanoma", "nevus"), progress=False)
    assert kept.class_names == ("melanoma", "nevus") and kept.labels.tolist() == [0, 0, 1, 1]
    assert load_images(root, 32, unlabelled=True, progress=False).labels is None




def test_a_fifo_named_like_an_image_is_skipped_unopened(tmp_path, capsys):
    write_images(tmp_path / "images", ["a", "b"])
    os.mkfifo(tmp_path / "images" / "stuck.png")
    dataset = load_images(tmp_path / "images", 32, progress=False)  # would block forever if opened
    assert len(dataset) == 2
    assert "skipped 1 file(s)" in capsys.readouterr().err


def png_declaring(width: int, height: int) -> bytes:
    """A tiny real PNG whose header is rewritten to declare width x height."""
    data = bytearray(cv2.imencode(".png", np.zeros((4, 4, 3), np.uint8))[1].tobytes())
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def test_huge_declared_images_are_skipped_before_decoding(tmp_path, monkeypatch, capsys):
    write_images(tmp_path / "images", ["a", "b"], size=40)
    (tmp_path / "images" / "bomb.png").write_bytes(png_declaring(40000, 40000))
    dataset = load_images(tmp_path / "images", 32, progress=False)
    assert len(dataset) == 2 and "skipped 1 unreadable" in capsys.readouterr().err
    monkeypatch.setenv("LESIONGAN_MAX_IMAGE_PIXELS", "1000")  # 40x40 = 1600 pixels: over
    with pytest.raises(UserError, match="no decodable image"):
        load_images(tmp_path / "images", 32, progress=False)
    monkeypatch.setenv("LESIONGAN_MAX_IMAGE_PIXELS", "lots")
    with pytest.raises(UserError, match="LESIONGAN_MAX_IMAGE_PIXELS must be a positive number"):
        load_images(tmp_path / "images", 32, progress=False)


def write_npz_header_only(path, shape):
    """An .npz whose image array header declares `shape` (and holds no pixels)."""
    import zipfile

    header = {"descr": "|u1", "fortran_order": False, "shape": shape}
    import io

    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, header)
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("train_images.npy", buffer.getvalue())


@pytest.mark.parametrize("case, message", [
    ("string labels", "train_labels must hold one integer class index per image"),
    ("gap", r"labels use classes 0, 1, 7 but none of 2..6"),
    ("absurd", r"labels use classes 0, 1099511627776 but none of 1..1099511627775"),
    ("zero size", "with no zero size"),
    ("absurd shape", "declares images of 1000000x1000000 pixels"),
])
def test_bad_npz_files_are_one_line_errors(tmp_path, case, message):
    images = np.zeros((3, 8, 8, 3), np.uint8)
    path = tmp_path / "d.npz"
    if case == "string labels":
        np.savez(path, train_images=images, train_labels=np.array(["mel", "nv", "nv"]))
    elif case == "gap":
        np.savez(path, train_images=images, train_labels=np.array([0, 1, 7]))
    elif case == "absurd":
        np.savez(path, train_images=images, train_labels=np.array([0, 2**40, 0]))
    elif case == "zero size":
        np.savez(path, train_images=np.zeros((3, 0, 8, 3), np.uint8))
    else:
        write_npz_header_only(path, (1, 1_000_000, 1_000_000, 3))
    with pytest.raises(UserError, match=message) as caught:
        load_images(path, 32)
    assert "\n" not in str(caught.value)


# ----------------------------------------------------------------------------- conditional runs


def train(tmp_path, data, backend, *extra):
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps(TINY))
    out = tmp_path / f"run-{backend}"
    argv = ["train", "--data", str(data), "--out", str(out), "--backend", backend, "--config", str(config),
            "--image-size", "32", "--epochs", "1", "--conditional", "--no-progress", *extra]
    assert main(argv) == 0
    return out


def generated_classes(run_dir, out, backend, name) -> list[str]:
    assert main(["generate", "--run", str(run_dir), "--count", "3", "--out", str(out), "--class", name,
                 "--backend", backend, "--in-process", "--no-progress"]) == 0
    with open(out / "manifest.csv", newline="") as f:
        return [row["class"] for row in csv.DictReader(f)]


@pytest.mark.slow
def test_a_two_class_run_from_the_public_copy_trains_and_generates_a_named_class(tmp_path, backend_name, capsys):
    label_file, *_ = isic_set(tmp_path / "set", "public copy")
    write_images(tmp_path / "set" / "images", image_ids(8))
    (tmp_path / "set" / "ISIC-2017_Training_Classes.csv").write_text(
        "image_id,melanoma\n" + "".join(f"{i},{k % 2}.0\n" for k, i in enumerate(image_ids(8))))
    run_dir = train(tmp_path, tmp_path / "set" / "images", backend_name)
    assert "classes: not_melanoma 4, melanoma 4" in capsys.readouterr().out
    full = json.loads((run_dir / "config.json").read_text())
    assert full["model"]["num_classes"] == 2 and full["data"]["class_names"] == ["not_melanoma", "melanoma"]
    assert full["data"]["labelling"]["label_column"] == "melanoma"
    assert full["data"]["labels"] == str(label_file.resolve())
    assert generated_classes(run_dir, tmp_path / "gen", backend_name, "melanoma") == ["melanoma"] * 3
    assert generated_classes(run_dir, tmp_path / "gen0", backend_name, "0") == ["not_melanoma"] * 3
    assert main(["generate", "--run", str(run_dir), "--count", "3", "--out", str(tmp_path / "x"), "--class", "nevus"]) == 2
    assert "unknown class 'nevus'; the classes are 0 not_melanoma, 1 melanoma" in capsys.readouterr().err


@pytest.mark.slow
def test_a_seven_class_run_trains_generates_and_resumes_with_its_choices(tmp_path, backend_name, capsys):
    ids = image_ids(14)
    codes = ISIC_2018.split(",")[1:]
    (tmp_path / "gt").mkdir()
    (tmp_path / "gt" / "ISIC2018_Task3_Training_GroundTruth.csv").write_text(one_hot(ISIC_2018, ids, codes * 2))
    write_images(tmp_path / "images", ids)
    run_dir = train(tmp_path, tmp_path / "images", backend_name,
                    "--labels", str(tmp_path / "gt" / "ISIC2018_Task3_Training_GroundTruth.csv"))
    full = json.loads((run_dir / "config.json").read_text())
    assert full["model"]["num_classes"] == 7 and full["data"]["class_names"] == codes
    assert generated_classes(run_dir, tmp_path / "gen", backend_name, "vasc") == ["VASC"] * 3
    assert main(["train", "--resume", str(run_dir), "--epochs", "2", "--no-progress"]) == 0
    assert main(["train", "--resume", str(run_dir), "--epochs", "3", "--binary", "MEL"]) == 2
    assert "drop --binary" in capsys.readouterr().err


def test_a_binary_choice_is_recorded_and_reloaded_on_resume(tmp_path):
    isic_set(tmp_path / "set", "ISIC 2018")
    run_dir = train(tmp_path, tmp_path / "set" / "images", "numpy", "--binary", "MEL")
    full = json.loads((run_dir / "config.json").read_text())
    assert full["data"]["class_names"] == ["not_MEL", "MEL"] and full["data"]["choices"]["binary"] == "MEL"
    assert main(["train", "--resume", str(run_dir), "--epochs", "2", "--no-progress"]) == 0
